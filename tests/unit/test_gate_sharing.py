"""Encode once per distinct projection (issue 18): deliveries of a record whose schemas encode alike and whose shapes
make the same row share one encoded body, each under its own schema id; the bytes are those each delivery's own
encoder makes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from broker.domain.jurisdiction import Unresolved, resolve_areas
from broker.domain.topics import delivery_topic, value_subject
from broker.domain.wire import header_schema_id
from broker.services import serde
from broker.services.serde import AvroDeserializer, SerializationContext
from tests.unit.gate_fakes import (
    ANALYST_TIER,
    DPH_TIER,
    INGEST,
    LA_TABLE,
    T1,
    T1_SCHEMA,
    GateHarness,
    agreement,
    catalog_document,
    make_gate,
)

LEICESTER = "E06000016"
# Three more bodies serving Leicester under the DPH tier, as a national fan-out has many subscribers of one area.
SAME_TIER = ("east-midlands-hpt", "leicester-lrf", "ukhsa-em-field-epi")
PSEUDONYMS: dict[str, Any] = {
    "name": "pseudonymised", "roles": ["dph"], "other_fields": "drop",
    "fields": {"nhs_number": {"transform": "pseudonymise", "method": None, "as": None, "params": {}},
               "sex": {"transform": "keep", "method": None, "as": None, "params": {}}},
}


@pytest.fixture
def encodings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of every record schema the serde encodes a body with, in order."""
    seen: list[str] = []
    body = serde.AvroSerializer._body

    def counting(self: serde.AvroSerializer, record: Any, ctx: serde.SerializationContext) -> bytes:
        seen.append(str(self._name))
        return body(self, record, ctx)
    monkeypatch.setattr(serde.AvroSerializer, "_body", counting)
    yield seen


def fan_out(*tiers: dict[str, Any]) -> GateHarness:
    extra = {f"t1-{body}": agreement(body, LEICESTER, *tiers) for body in SAME_TIER}
    harness = make_gate(catalog_document(**extra))
    harness.gate.start()
    return harness


def encoded_by_own_serializer(h: GateHarness, topic: str, offset: int) -> bytes | None:
    """What the gate sent to `topic` before issue 18: the row projected and encoded by that delivery alone."""
    [record] = [r for r in h.stage.transactions[-1].consumed if r.offset == offset]
    ctx = SerializationContext(INGEST)
    row = AvroDeserializer(h.registry, json.dumps(T1_SCHEMA))(record.value, ctx)
    assert row is not None
    areas = resolve_areas(row, [str(f) for f in T1_SCHEMA["accord.jurisdiction"]], LA_TABLE)
    assert not isinstance(areas, Unresolved)
    [delivery] = [d for d in h.gate.deliveries[T1] if d.topic == topic]
    shaped = delivery.project(row, areas)
    assert shaped is not None
    return delivery.encode(shaped, delivery.context)


def test_subscribers_of_one_projection_share_one_encoding_per_record(encodings: list[str]) -> None:
    h = fan_out(DPH_TIER)
    records = [h.record(0), h.record(1)]
    encodings.clear()  # the harness's own encoding of the ingest records is not the gate's
    h.stage.queue(*records)

    assert h.gate.step() == 2

    dph_topics = {delivery_topic(body, "dph", T1) for body in ("leicester-city-council", *SAME_TIER)}
    analyst = delivery_topic("leicester-city-council", "analyst", T1)
    for topic in [*dph_topics, analyst]:
        assert len(h.delivered(topic)) == 2
    # Per record: one body for the four DPH deliveries, one for the analyst's narrower projection.
    assert len(encodings) == 4


def test_shared_bodies_are_byte_for_byte_what_each_delivery_would_encode_under_its_own_schema_id(
        encodings: list[str]) -> None:
    h = fan_out(DPH_TIER, ANALYST_TIER)
    h.stage.queue(h.record(0), h.record(1))
    encodings.clear()
    h.gate.step()

    sent = h.stage.committed()
    assert len(sent) == 2 * (2 + 2 * len(SAME_TIER))  # dph and analyst of Leicester and each of the three bodies
    assert len(encodings) == 2 * 2  # per record: one body for the DPH tier's deliveries, one for the analysts'
    ids = set()
    for s in sent:
        offset = int(s.headers["accord.source"].decode().rsplit("/", 1)[1])
        assert s.value == encoded_by_own_serializer(h, s.topic, offset)
        assert header_schema_id(s.value or b"") == h.registry.latest(value_subject(s.topic)).schema_id
        ids.add(header_schema_id(s.value or b""))
        assert h.decode(s)  # each reads back with its own subject's schema
    assert len(ids) == 2 + 2 * len(SAME_TIER)  # every delivery topic has its own schema id


def test_pseudonymised_deliveries_are_each_encoded_with_their_own_subscribers_pseudonyms(
        encodings: list[str]) -> None:
    h = fan_out(PSEUDONYMS)
    record = h.record(0, nhs_number="9434765919")
    encodings.clear()
    h.stage.queue(record)
    h.gate.step()

    # Leicester's own DPH and analyst, plus one encoding per pseudonymising subscriber (none shared).
    assert len(encodings) == 2 + len(SAME_TIER)
    received = {body: h.delivered(delivery_topic(body, "dph", T1)) for body in SAME_TIER}
    pseudonyms = set()
    for [sent] in received.values():
        assert sent.value == encoded_by_own_serializer(h, sent.topic, 0)
        row = h.decode(sent)
        assert row is not None and row["sex"] == record_sex(h, 0)
        pseudonyms.add(row["nhs_number"])
    assert len(pseudonyms) == len(SAME_TIER)  # unlinkable across subscribers


def record_sex(h: GateHarness, offset: int) -> str:
    [record] = [r for r in h.stage.transactions[-1].consumed if r.offset == offset]
    row = AvroDeserializer(h.registry)(record.value, SerializationContext(INGEST))
    assert row is not None
    return str(row["sex"])
