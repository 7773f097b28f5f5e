"""Builds a subscriber's sinks from its config (connectors/config.py): its own Kafka login, the registry with its
token, the target (a database, a folder or a webhook); runs them until stopped, or reports their positions and lag;
sends a webhook sink's dead letters again."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from broker.adapters.kafka_access import KafkaAccess, read_password_file
from broker.adapters.kafka_partitions import KafkaPartitionReader
from broker.adapters.local_files import LocalDirectory
from broker.adapters.postgres import PostgresDatabase
from broker.adapters.receipts_http import HttpReceipts
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.adapters.webhook_http import HttpEndpoint
from broker.errors import ConfigError
from connectors.config import AnySinkConfig, FileSinkConfig, SinkConfig, WebhookSinkConfig
from connectors.sinks import webhook
from connectors.sinks.base import PartitionStatus, Receipts, Sink
from connectors.sinks.files import FileSink
from connectors.sinks.postgres import PostgresSink, default_table
from connectors.sinks.webhook import Courier, Redelivery, RetryPolicy, WebhookSink, check_secret
from connectors.sinks.webhook_state import DeadLetter, StateDirectory


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


def kafka_login(config: AnySinkConfig) -> KafkaAccess:
    password = SecretStr(read_password_file(config.kafka.password_file))
    return KafkaAccess(config.kafka.bootstrap, config.kafka_user(), password,
                       "SASL_SSL" if config.kafka.tls else "SASL_PLAINTEXT")


def _report(exc: Exception) -> None:
    print(f"sink: {exc}; retrying from the stored position", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f"sink: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def open_sinks(config: AnySinkConfig, stop: Callable[[], bool] = lambda: False,
               wait: Callable[[float], object] = time.sleep) -> Iterator[Sinks]:
    """One sink per delivery of `config` (PostgreSQL, files or webhook), closed on exit; `stop` and `wait` end a
    webhook's retries early."""
    if isinstance(config, WebhookSinkConfig):
        with open_webhook_sinks(config, stop, wait) as hooks:
            yield hooks
        return
    built = Sinks([], [])
    try:
        token = _read(config.registry.token_file, "registry token")
        registry = HttpSchemaRegistry(config.registry.url, token=lambda: token)
        built.closers.append(registry.close)
        if isinstance(config, FileSinkConfig):
            _add_file_sinks(config, registry, built)
            yield built
            return
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


def courier(config: WebhookSinkConfig, endpoint: webhook.Endpoint, stop: Callable[[], bool] = lambda: False,
            wait: Callable[[float], object] = time.sleep) -> Courier:
    hook = config.webhook
    secret = check_secret(_read(hook.secret_file, "webhook secret"), str(hook.secret_file))
    policy = RetryPolicy(hook.retry.max_attempts, hook.retry.first_backoff_s, hook.retry.max_backoff_s)
    return Courier(endpoint, secret, policy, wait=wait, stop=stop, on_warning=_warn)


@contextlib.contextmanager
def open_webhook_sinks(config: WebhookSinkConfig, stop: Callable[[], bool] = lambda: False,
                       wait: Callable[[float], object] = time.sleep) -> Iterator[Sinks]:
    """One WebhookSink per delivery of `config`, all POSTing to its endpoint, closed on exit."""
    built = Sinks([], [])
    try:
        endpoint = HttpEndpoint(config.webhook.url, config.webhook.timeout_s)
        built.closers.append(endpoint.close)
        sender = courier(config, endpoint, stop, wait)
        receipts = _receipts(config, built)
        token = _read(config.registry.token_file, "registry token")
        registry = HttpSchemaRegistry(config.registry.url, token=lambda: token)
        built.closers.append(registry.close)
        state = StateDirectory(config.webhook.state_dir)
        kafka = kafka_login(config)
        for topic in config.topics():
            source = KafkaPartitionReader(kafka, topic, client_id=f"{config.kafka_user()}.sink")
            built.closers.append(source.close)
            built.sinks.append(WebhookSink(source, registry, sender, state, config.webhook.batch, on_error=_report,
                                           wait=wait, receipts=receipts))
        yield built
    finally:
        built.close()


def _add_file_sinks(config: FileSinkConfig, registry: HttpSchemaRegistry, built: Sinks) -> None:
    kafka, target = kafka_login(config), config.files
    directory = LocalDirectory(target.directory)
    receipts = _receipts(config, built)  # closed after the sinks: a clean stop's last file sends its receipts
    for delivery, topic in zip(config.deliveries, config.topics(), strict=True):
        source = KafkaPartitionReader(kafka, topic, client_id=f"{config.kafka_user()}.sink")
        built.closers.append(source.close)
        sink = FileSink(source, registry, directory, delivery.prefix or delivery.stream, target.format,
                        target.max_rows, target.max_seconds, on_error=_report, receipts=receipts)
        built.closers.append(sink.close)  # a clean stop commits the file in hand
        built.sinks.append(sink)


def _receipts(config: SinkConfig | FileSinkConfig | WebhookSinkConfig, built: Sinks) -> Receipts | None:
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


class SinkMetrics(Protocol):
    def stored(self, topic: str, n: int) -> None: ...

    def rejected(self, topic: str, n: int) -> None: ...

    def failed(self, topic: str) -> None: ...

    def position(self, topic: str, partition: int, stored: int, lag: int) -> None: ...


def run(config: AnySinkConfig, stop: Callable[[], bool], max_records: int = 2000, metrics: SinkMetrics | None = None,
        lag_every_s: float = 5.0, wait: Callable[[float], object] = time.sleep) -> None:
    """Move every delivery in turn until `stop()`; a failing one is retried from its stored position. With
    `metrics`, counts what was stored, rejected (for a webhook: dead-lettered) and failed, and every `lag_every_s`
    the lag per partition. `wait` is how a webhook's retries wait (so that a stop ends them)."""
    with contextlib.ExitStack() as held:
        if isinstance(config, WebhookSinkConfig):
            held.enter_context(StateDirectory(config.webhook.state_dir).lock())
        built = held.enter_context(open_sinks(config, stop, wait))
        next_lag = 0.0
        while not stop():
            for sink in built.sinks:
                rejected, failures = sink.rejected, sink.failures
                moved = sink.step_or_wait(max_records)
                if metrics is not None:
                    if moved:
                        metrics.stored(sink.topic, moved - (sink.rejected - rejected))
                    if sink.rejected > rejected:
                        metrics.rejected(sink.topic, sink.rejected - rejected)
                    if sink.failures > failures:
                        metrics.failed(sink.topic)
            if metrics is not None and time.monotonic() >= next_lag:
                next_lag = time.monotonic() + lag_every_s
                for sink in built.sinks:
                    with contextlib.suppress(Exception):  # Kafka away: the lag is shown again when it is back
                        for row in sink.lag_now():
                            metrics.position(row.topic, row.partition, row.stored, row.lag)
        for sink in built.sinks:
            sink.send_receipts(now=True)    # what is still owed, once more before stopping (kept in memory only)


def dead_letters(config: WebhookSinkConfig) -> list[DeadLetter]:
    return StateDirectory(config.webhook.state_dir).dead_letters()


def redeliver(config: WebhookSinkConfig, ids: Sequence[str] | None) -> list[Redelivery]:
    """POST the dead letters `ids` (None: all) once more; needs neither Kafka nor the registry."""
    with HttpEndpoint(config.webhook.url, config.webhook.timeout_s) as endpoint:
        return webhook.redeliver(StateDirectory(config.webhook.state_dir), courier(config, endpoint), ids)


def status(config: AnySinkConfig) -> tuple[list[PartitionStatus], dict[str, int]]:
    """Every partition's stored position and lag; per topic, the records kept aside as rejected."""
    with open_sinks(config) as built:
        return ([row for sink in built.sinks for row in sink.status()],
                {sink.topic: sink.rejected_count() for sink in built.sinks})
