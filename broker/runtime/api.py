"""Runs the API process: ingest for the streams in schemas/, quarantine queries, subscribers' pulls and live
events, metrics."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import uvicorn

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_topics
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
from broker.clock import system_clock
from broker.config import Settings
from broker.domain.cursors import CursorCodec
from broker.domain.fences import delivery_access
from broker.domain.geography_files import load_la_table
from broker.domain.topics import ingest_topic, quarantine_topic
from broker.runtime.probes import dependency_probes
from broker.security.api_tokens import ServiceTokens
from broker.security.control_keys import trusted_keys
from broker.security.secrets import cursor_secret
from broker.services.deliveries import Deliveries
from broker.services.ingest import INGEST_PARTITIONS, Ingest, load_stream_schemas, read_quarantine
from broker.services.receipts import DeliveryReceipts


def ensure_stream_topics(kafka: KafkaAccess, streams: Iterable[str]) -> None:
    """The ingest topic (partitioned for gate workers) and the quarantine topic of each stream."""
    streams = list(streams)
    create_topics(kafka, [ingest_topic(s) for s in streams], partitions=INGEST_PARTITIONS)
    create_topics(kafka, [quarantine_topic(s) for s in streams])


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@contextmanager
def open_ingest(kafka: KafkaAccess, registry_url: str, settings: Settings) -> Iterator[tuple[Ingest, KafkaLog]]:
    """An Ingest for every stream in the settings' schemas directory, with its ingest and quarantine topics; it
    publishes on the client `settings.ingest_transport` names, and the log handed back beside it reads."""
    schemas = load_stream_schemas(settings.schemas_dir)
    ensure_stream_topics(kafka, schemas)
    log = KafkaLog(kafka, client_id="accord-ingest")
    producer = RdkafkaRecordLog(kafka) if settings.ingest_transport == "librdkafka" else log
    requests = KafkaIngestRequests(kafka)  # follows the answered keys from the first keyed request on
    registry = HttpSchemaRegistry(registry_url, token=ServiceTokens(settings.secrets_dir, "api"))
    try:
        yield Ingest(producer, registry, schemas, load_la_table(settings.geography_dir), _today, count=count_ingest,
                     requests=requests), log
    finally:
        registry.close()
        requests.close()
        if producer is not log:
            producer.close()
        log.close()


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
