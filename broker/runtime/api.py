"""Runs the API process: ingest for the streams in schemas/ and those an applied catalog adds, quarantine queries,
subscribers' pulls and live events, metrics."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_partitioned_topics, create_topics
from broker.adapters.kafka_control import ControlView
from broker.adapters.kafka_deliveries import KafkaDeliveryLog
from broker.adapters.kafka_governance import ensure_audit_topic
from broker.adapters.kafka_ingest_requests import KafkaIngestRequests
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.kafka_receipts import KafkaReceiptAudit, KafkaReceiptKeys
from broker.adapters.metrics import count_ingest, count_receipt
from broker.adapters.rdkafka_log import RdkafkaRecordLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.api.app import create_api_app
from broker.api.auth import Guard
from broker.api.deliveries import LiveOptions
from broker.api.readiness import add_readiness
from broker.catalog.loader import load_stream_partitions
from broker.clock import system_clock
from broker.config import Settings
from broker.domain.cursors import CursorCodec
from broker.domain.fences import delivery_access
from broker.domain.geography_files import load_la_table
from broker.domain.partitions import StreamPartitions, resizes
from broker.domain.topics import ingest_topic, quarantine_topic
from broker.runtime.probes import dependency_probes
from broker.security.api_tokens import ServiceTokens
from broker.security.control_keys import trusted_keys
from broker.security.secrets import cursor_secret
from broker.services.deliveries import Deliveries
from broker.services.ingest import Ingest, load_stream_schemas, read_quarantine
from broker.services.receipts import DeliveryReceipts
from broker.services.stream_schemas import StreamSchemas

log = logging.getLogger(__name__)


def ensure_stream_topics(kafka: KafkaAccess, streams: Iterable[str], catalog_dir: Path) -> None:
    """The ingest topic (with the partitions `catalog_dir`'s streams.yaml gives it, for gate workers to share) and
    the quarantine topic of each stream. An existing ingest topic is never resized here; a count other than the
    catalog's is logged (domain/partitions.py)."""
    streams = list(streams)
    counts = load_stream_partitions(catalog_dir)
    ensure_partitioned(kafka, {ingest_topic(s): counts.get(s, StreamPartitions()).ingest for s in streams})
    create_topics(kafka, [quarantine_topic(s) for s in streams])


def ensure_applied_stream_topics(kafka: KafkaAccess, stream: str, entry: Mapping[str, Any] | None) -> None:
    """The ingest and quarantine topics of a stream an applied catalog added since this process started, the ingest
    topic with the partitions the applied catalog's entry `entry` gives it."""
    partitions = (entry or {}).get("partitions")
    count = partitions if isinstance(partitions, int) and partitions > 0 else StreamPartitions().ingest
    ensure_partitioned(kafka, {ingest_topic(stream): count})
    create_topics(kafka, [quarantine_topic(stream)])


def ensure_partitioned(kafka: KafkaAccess, wanted: Mapping[str, int]) -> None:
    """Make the topics of `wanted` that are missing with their partition counts; log each existing one whose count
    differs (growing it is the operator's choice: `accord kafka partitions --grow`)."""
    now = create_partitioned_topics(kafka, wanted)
    for resize in resizes(now, wanted):
        log.warning("%s", resize.describe())


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@contextmanager
def open_ingest(kafka: KafkaAccess, registry_url: str, settings: Settings) -> Iterator[tuple[Ingest, KafkaLog]]:
    """An Ingest for every stream in the settings' schemas directory, with its ingest and quarantine topics, and for
    every stream a catalog applied later names (its schema from the registry, its topics made on its first publish:
    services/stream_schemas.py); it publishes on the client `settings.ingest_transport` names, and the log handed
    back beside it reads."""
    schemas = load_stream_schemas(settings.schemas_dir)
    ensure_stream_topics(kafka, schemas, settings.catalog_dir)
    log = KafkaLog(kafka, client_id="accord-ingest")
    producer = RdkafkaRecordLog(kafka) if settings.ingest_transport == "librdkafka" else log
    requests = KafkaIngestRequests(kafka)  # follows the answered keys from the first keyed request on
    registry = HttpSchemaRegistry(registry_url, token=ServiceTokens(settings.secrets_dir, "api"))
    try:
        with _stream_finder(kafka, registry, settings) as discover:
            yield Ingest(producer, registry, schemas, load_la_table(settings.geography_dir), _today,
                         count=count_ingest, requests=requests, discover=discover), log
    finally:
        registry.close()
        requests.close()
        if producer is not log:
            producer.close()
        log.close()


@contextmanager
def _stream_finder(kafka: KafkaAccess, registry: HttpSchemaRegistry,
                   settings: Settings) -> Iterator[Callable[[str], dict[str, Any] | None]]:
    """Ingest's look-up of a stream it did not start with: named by the latest applied catalog (the signed control
    topic), its schema from the registry, its ingest and quarantine topics made."""
    control = ControlView(kafka, trusted_keys(settings.secrets_dir, settings.control_public_key),
                          client_id="accord-api-streams", reader="api")
    streams = StreamSchemas(lambda: control.current().catalog, registry)

    def discover(stream: str) -> dict[str, Any] | None:
        schema = streams.lookup(stream)
        if schema is not None:
            ensure_applied_stream_topics(kafka, stream, streams.entry(stream))
        return schema

    try:
        yield discover
    finally:
        control.close()


@contextmanager
def open_deliveries(kafka: KafkaAccess, registry_url: str, settings: Settings) -> Iterator[Deliveries]:
    """The pull API's use case: delivery topics read as the API's own Kafka user, rights from the control topic (its
    signed records only)."""
    log = KafkaDeliveryLog(kafka)
    control = ControlView(kafka, trusted_keys(settings.secrets_dir, settings.control_public_key),
                          client_id="accord-api-control", reader="api")
    registry = HttpSchemaRegistry(registry_url, token=ServiceTokens(settings.secrets_dir, "api"))
    try:
        yield Deliveries(log, registry, lambda topic: delivery_access(control.current(), topic, system_clock()),
                         CursorCodec(cursor_secret(settings.secrets_dir)))
    finally:
        registry.close()
        control.close()
        log.close()


@contextmanager
def open_receipts(kafka: KafkaAccess) -> Iterator[DeliveryReceipts]:
    """Receipts: the delivery topics read as the API's own Kafka user, keys from the governance log, accepted
    receipts onto the audit topic."""
    ensure_audit_topic(kafka)
    log, keys, audit = KafkaDeliveryLog(kafka), KafkaReceiptKeys(kafka), KafkaReceiptAudit(kafka)
    try:
        yield DeliveryReceipts(log, keys, audit, system_clock, count=count_receipt)
    finally:
        audit.close()
        keys.close()
        log.close()


def serve(settings: Settings, kafka: KafkaAccess, registry_url: str, host: str, port: int) -> None:
    with open_ingest(kafka, registry_url, settings) as (ingest, log), \
            open_deliveries(kafka, registry_url, settings) as deliveries, open_receipts(kafka) as receipts:
        app = create_api_app(ingest, lambda stream, limit: read_quarantine(log, stream, limit),
                             settings.max_request_bytes, guard=Guard.from_settings(settings), deliveries=deliveries,
                             live=LiveOptions(), receipts=receipts)
        add_readiness(app, dependency_probes(settings, kafka, registry_url=registry_url))
        uvicorn.run(app, host=host, port=port, log_level="warning")
