"""The API's ingest on either Kafka client (ACCORD_INGEST_TRANSPORT) against the real broker: each record's answer
names where it really is, keys land where kafka-python puts them, and a record Kafka will not take is an error."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any, get_args

import pytest
from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2

from broker.adapters.kafka_log import KafkaLog
from broker.adapters.rdkafka_log import RdkafkaRecordLog
from broker.config import Settings, Transport
from broker.domain.messages import Outgoing, Record
from broker.domain.topics import ingest_topic, quarantine_topic
from broker.errors import ServiceError
from broker.local.stack import Endpoints
from broker.runtime.api import open_ingest

STREAM = "ukhsa.positive-tests"
TODAY = dt.datetime.now(dt.UTC).date()
AREAS = ["E06000016", "E06000018", "E08000003", "E08000025", "E08000035", "E09000012", "E06000052", "E06000008"]


def _case(prefix: str, n: int, ltla: str) -> dict[str, Any]:
    # Upper tier of each: the district itself, all unitary or metropolitan.
    return {"specimen_id": f"{prefix}-{n}", "nhs_number": None, "name": "Alex Example", "dob": "1984-03-07",
            "sex": "FEMALE", "ethnicity": None, "address": "1 Example Road", "postcode": "LE1 1AA",
            "occupation": None, "specimen_date": (TODAY - dt.timedelta(days=2)).isoformat(),
            "lab_report_date": (TODAY - dt.timedelta(days=1)).isoformat(), "test_type": "PCR",
            "pillar": "PILLAR_2", "ltla": ltla, "utla": ltla}


@pytest.mark.parametrize("transport", get_args(Transport))
def test_each_answer_names_where_its_record_is(services: Endpoints, applied_catalog: dict[str, Any],
                                               transport: Transport) -> None:
    prefix = f"TRANSPORT-{transport}-{uuid.uuid4().hex[:8]}"
    records: list[Any] = [_case(prefix, n, AREAS[n % len(AREAS)]) for n in range(400)]
    records[7] = {**records[7], "postcode": ""}         # quarantined, in the same batch as the good ones
    with open_ingest(services.kafka, services.registry_url, Settings(ingest_transport=transport)) as (ingest, log):
        outcomes = ingest.publish(STREAM, records)
        assert [o.status for o in outcomes].count("quarantined") == 1 and outcomes[7].status == "quarantined"
        places = {(o.topic, o.partition) for o in outcomes}
        written: dict[tuple[str, int, int], Record] = {}
        for topic, partition in places:  # read each partition once, from the first offset answered on it
            offsets = [o.offset for o in outcomes if (o.topic, o.partition) == (topic, partition)]
            written |= {(topic, partition, r.offset): r for r in log.read(
                topic, max_records=max(offsets) - min(offsets) + 1, start_offset=min(offsets),
                partitions=[partition]) if r.offset <= max(offsets)}
        for outcome in outcomes:
            found = written[(outcome.topic, outcome.partition, outcome.offset)]
            if outcome.topic == ingest_topic(STREAM):
                # Each record's own: its specimen id is in its Avro body, its area is its key.
                assert f"{prefix}-{outcome.index}".encode() in (found.value or b"")
                assert found.key == records[outcome.index]["ltla"].encode()
            else:
                assert outcome.topic == quarantine_topic(STREAM) and f"{prefix}-7".encode() in (found.value or b"")
        # One area, one partition, whichever client: where kafka-python's partitioner (murmur2) puts it.
        by_area = {(records[o.index]["ltla"], o.partition) for o in outcomes if o.status == "accepted"}
    consumer = KafkaConsumer(**services.kafka.client_options(), client_id="test-partitions")
    try:
        partitions = len(consumer.partitions_for_topic(ingest_topic(STREAM)) or ())
    finally:
        consumer.close()
    assert len(by_area) == len(AREAS) and (len({partition for _, partition in by_area}) > 1 or partitions == 1)
    assert by_area == {(area, (murmur2(area.encode()) & 0x7FFFFFFF) % partitions) for area in AREAS}


def test_a_record_kafka_refuses_is_an_error_not_an_answer(services: Endpoints) -> None:
    log = RdkafkaRecordLog(services.kafka, client_id="test-refused", timeout_s=5.0)
    try:
        with pytest.raises(ServiceError, match="publishing 2 records failed"):
            log.publish_all([Outgoing(quarantine_topic(STREAM), b"{}"),
                             Outgoing(f"no-such-topic-{uuid.uuid4().hex[:8]}", b"{}")])
    finally:
        log.close()


def test_kafka_python_still_reads_what_librdkafka_wrote(services: Endpoints) -> None:
    # A quarantine entry's shape (JSON with a source): every reader of the shared quarantine topic parses it.
    value = json.dumps({"source": {"kind": "test", "written_by": f"librdkafka {uuid.uuid4().hex}"}}).encode()
    writer, reader = RdkafkaRecordLog(services.kafka, client_id="test-written"), KafkaLog(services.kafka)
    try:
        partition, offset = writer.publish(quarantine_topic(STREAM), value, headers=[("accord.test", b"1")])
        [found] = reader.read(quarantine_topic(STREAM), max_records=1, start_offset=offset, partitions=[partition])
    finally:
        writer.close()
        reader.close()
    assert (found.value, found.headers) == (value, (("accord.test", b"1"),))
