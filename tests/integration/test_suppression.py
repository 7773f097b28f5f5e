"""Small-number suppression of T6 on the real Kafka, OPA, registry and gate (issue 21 part 3).

Leicester's analysts receive vaccination uptake on the publication channel (t6-leicester-publication: counts
under 3 hidden, partners hidden so no row or column total gives them away, the rest rounded to 5); its DPH, on
the restricted channel (t6-leicester), receives the same cells unsuppressed. The table is the one worked by hand
in tests/unit/test_suppression.py, published by the immunisation system's own Kafka client in one transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from broker.adapters.kafka_transactions import transactional_producer
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.domain.topics import ingest_topic
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from broker.services.serde import AvroSerializer, SerializationContext
from tests.conftest import SCHEMAS, service_tokens
from tests.integration.gate_support import Receiver, end_offsets, start_gate, topic_for

T6 = "nis.vaccination-uptake"
ANALYSTS = topic_for("leicester-city-council", "analyst", T6)
DPH = topic_for("leicester-city-council", "dph", T6)
LSOAS = {"A": "E01013600", "B": "E01013601", "C": "E01013602"}  # Leicester 003A-C
VACCINATED = {"A": {"WHITE": 40, "ASIAN": 2, "BLACK": 12},
              "B": {"WHITE": 33, "ASIAN": 17, "BLACK": 9},
              "C": {"WHITE": 25, "ASIAN": 8, "BLACK": 1}}
# worked by hand: A's 2 and C's 1 are small; BLACK 12 and ASIAN 8 hide them from their rows' totals
SUPPRESSED = {"A": {"WHITE": 40, "ASIAN": None, "BLACK": None},
              "B": {"WHITE": 35, "ASIAN": 15, "BLACK": 10},
              "C": {"WHITE": 25, "ASIAN": None, "BLACK": None}}


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    runner = start_gate(services, "test-suppression", "suppression-worker")
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure


def _publish_table(services: Endpoints, cells: list[dict[str, Any]]) -> dict[bytes, dict[str, Any]]:
    """One table in one Kafka transaction on one partition, as a publisher writes a table to be suppressed whole."""
    registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
    encode = AvroSerializer(registry, (SCHEMAS / f"{T6}.avsc").read_text())
    producer = transactional_producer(services.kafka, f"nis-table-{uuid.uuid4().hex[:8]}", "test publisher")
    try:
        producer.begin_transaction()
        futures = [producer.send(ingest_topic(T6), encode(cell, SerializationContext(ingest_topic(T6))),
                                 key=b"E06000016", partition=0) for cell in cells]
        producer.commit_transaction()
        placed = [future.get(timeout=30) for future in futures]
    finally:
        producer.close()
        registry.close()
    return {f"{m.topic}/{m.partition}/{m.offset}".encode(): cell for m, cell in zip(placed, cells, strict=True)}


def test_the_publication_channel_receives_the_table_suppressed_and_the_restricted_channel_unsuppressed(
        services: Endpoints, gate: GateThread, receiver: Receiver) -> None:
    # the test's cells are one table (date, area, age band, dose), written in one transaction
    day, dose, band = dt.datetime.now(dt.UTC).date(), "BOOSTER", "AGE_60_64"
    cells = [{"as_at_date": day, "lsoa": LSOAS[row], "utla": "E06000016", "age_band": band,
              "ethnicity_group": group, "dose": dose, "vaccinated_n": n, "eligible_n": n + 20}
             for row, counts in VACCINATED.items() for group, n in counts.items()]
    start = end_offsets(services.kafka, [ANALYSTS, DPH])
    sources = _publish_table(services, cells)
    ours = lambda _r, h: h["accord.source"] in sources  # noqa: E731

    published = receiver.records(ANALYSTS, start[ANALYSTS], ours, want=len(cells))
    restricted = receiver.records(DPH, start[DPH], ours, want=len(cells))

    row_of = {lsoa: row for row, lsoa in LSOAS.items()}
    assert len(published) == len(restricted) == 9
    shown = {(row_of[v["lsoa"]], v["ethnicity_group"]): v for v, _ in published}
    assert {row: {g: shown[row, g]["vaccinated_n"] for g in counts} for row, counts in VACCINATED.items()} \
        == SUPPRESSED
    # eligible (n + 20) is never small, and is rounded: 40 + 20 = 60, 2 + 20 = 22 -> 20, 33 + 20 = 53 -> 55
    assert (shown["A", "WHITE"]["eligible_n"], shown["A", "ASIAN"]["eligible_n"], shown["B", "WHITE"]["eligible_n"]) \
        == (60, 20, 55)
    assert all(h["accord.suppression"] == b"threshold=3;round_to=5" for _, h in published)
    assert sorted((v["lsoa"], v["ethnicity_group"], v["vaccinated_n"]) for v, _ in restricted) == sorted(
        (c["lsoa"], c["ethnicity_group"], c["vaccinated_n"]) for c in cells), "the DPH's channel is unsuppressed"
    assert all("accord.suppression" not in h for _, h in restricted)
