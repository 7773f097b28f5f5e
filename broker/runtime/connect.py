"""Builds a subscriber's sinks from its config (connectors/config.py): its own Kafka login, the registry with its
token, the target database; runs them until stopped, or reports their positions and lag."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from broker.adapters.kafka_access import KafkaAccess, read_password_file
from broker.adapters.kafka_partitions import KafkaPartitionReader
from broker.adapters.postgres import PostgresDatabase
from broker.adapters.receipts_http import HttpReceipts
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.errors import ConfigError
from connectors.config import SinkConfig
from connectors.sinks.base import PartitionStatus, Receipts, Sink
from connectors.sinks.postgres import PostgresSink, default_table


@dataclass
class Sinks:
    sinks: list[Sink]
    closers: list[Callable[[], None]]

    def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                close()


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc}") from exc


def kafka_login(config: SinkConfig) -> KafkaAccess:
    password = SecretStr(read_password_file(config.kafka.password_file))
    return KafkaAccess(config.kafka.bootstrap, config.kafka_user(), password,
                       "SASL_SSL" if config.kafka.tls else "SASL_PLAINTEXT")


def _report(exc: Exception) -> None:
    print(f"sink: {exc}; retrying from the stored position", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f"sink: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def open_sinks(config: SinkConfig) -> Iterator[Sinks]:
    """One PostgresSink per delivery of `config`, closed on exit."""
    built = Sinks([], [])
    try:
        token = _read(config.registry.token_file, "registry token")
        registry = HttpSchemaRegistry(config.registry.url, token=lambda: token)
        built.closers.append(registry.close)
        password = (None if config.postgres.password_file is None
                    else _read(config.postgres.password_file, "PostgreSQL password"))
        database = PostgresDatabase(config.postgres.dsn, password, application_name=f"accord-sink-{config.body}")
        built.closers.append(database.close)
        kafka = kafka_login(config)
        receipts = _receipts(config, built)
        for delivery, topic in zip(config.deliveries, config.topics(), strict=True):
            source = KafkaPartitionReader(kafka, topic, client_id=f"{config.kafka_user()}.sink")
            built.closers.append(source.close)
            built.sinks.append(PostgresSink(source, registry, database, delivery.table or default_table(
                delivery.stream), delivery.key, on_error=_report, on_warning=_warn, receipts=receipts))
        yield built
    finally:
        built.close()


def _receipts(config: SinkConfig, built: Sinks) -> Receipts | None:
    """The receipts sender the config asks for (its key read once, its token at every send: a token replaced on
    disk is used from the next receipt)."""
    if config.receipts is None:
        return None
    from broker.security.receipt_keys import load_receipt_key

    login = config.receipts
    key = load_receipt_key(login.key_file)
    token_file = login.token_file or config.registry.token_file
    sender = HttpReceipts(login.api_url, lambda: _read(token_file, "API token"), key, config.body, config.role)
    built.closers.append(sender.close)
    return sender


def run(config: SinkConfig, stop: Callable[[], bool], max_records: int = 2000) -> None:
    """Move every delivery in turn until `stop()`; a failing one is retried from its stored position."""
    with open_sinks(config) as built:
        while not stop():
            for sink in built.sinks:
                sink.step_or_wait(max_records)
        for sink in built.sinks:
            sink.send_receipts(now=True)    # what is still owed, once more before stopping (kept in memory only)


def status(config: SinkConfig) -> tuple[list[PartitionStatus], dict[str, int]]:
    """Every partition's stored position and lag; per topic, the records kept aside as rejected."""
    with open_sinks(config) as built:
        return ([row for sink in built.sinks for row in sink.status()],
                {sink.topic: sink.rejected_count() for sink in built.sinks})
