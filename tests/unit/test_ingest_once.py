"""Keyed publish requests at the use case: a retry publishes nothing again and gets the first answer; the same key
with another body is a conflict; records of one request go to the log as one batch."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.domain.geography_files import load_la_table
from broker.domain.topics import ingest_topic, quarantine_topic
from broker.errors import IdempotencyConflict
from broker.services.ingest import REQUEST_KEY_HEADER, Ingest, RequestKey, kept_record, load_stream_schemas
from tests.unit.catalog_support import SCHEMAS
from tests.unit.ingest_fakes import MemoryLog, MemoryRequestLedger

T1 = "ukhsa.positive-tests"
STREAMS = load_stream_schemas(SCHEMAS)


def _case(**changes: Any) -> dict[str, Any]:
    return {"specimen_id": "LEI-1", "nhs_number": "9434765919", "name": "Ada Example", "dob": "1984-03-07",
            "sex": "FEMALE", "ethnicity": "H", "address": "1 Example Road", "postcode": "LE1 1AA",
            "specimen_date": "2020-06-22", "lab_report_date": "2020-06-23", "test_type": "PCR",
            "pillar": "PILLAR_2", "ltla": "E06000016", "utla": "E06000016", **changes}


def _ingest() -> tuple[Ingest, MemoryLog]:
    log = MemoryLog()
    ingest = Ingest(log, InMemorySchemaRegistry(), STREAMS, load_la_table(), lambda: dt.date(2020, 6, 26),
                    requests=MemoryRequestLedger(log))
    return ingest, log


def test_a_retried_key_publishes_once_and_answers_the_same() -> None:
    ingest, log = _ingest()
    once = RequestKey("k-1", "ukhsa", "digest-a")
    first, replayed_first = ingest.publish_once(T1, [_case(), _case(nhs_number="9434765918")], once)
    again, replayed_again = ingest.publish_once(T1, [_case(), _case(nhs_number="9434765918")], once)
    assert (replayed_first, replayed_again) == (False, True) and again == first
    assert (first["accepted"], first["quarantined"]) == (1, 1)
    assert len(log.sent[ingest_topic(T1)]) == 1 and len(log.sent[quarantine_topic(T1)]) == 1
    assert all((REQUEST_KEY_HEADER, b"k-1") in r.headers for r in log.sent[ingest_topic(T1)])


def test_the_same_key_with_another_body_is_a_conflict() -> None:
    ingest, log = _ingest()
    ingest.publish_once(T1, [_case()], RequestKey("k-1", "ukhsa", "digest-a"))
    with pytest.raises(IdempotencyConflict, match="different request body"):
        ingest.publish_once(T1, [_case(), _case()], RequestKey("k-1", "ukhsa", "digest-b"))
    assert len(log.sent[ingest_topic(T1)]) == 1


def test_keys_are_scoped_by_publisher_and_stream() -> None:
    ingest, log = _ingest()
    ingest.publish_once(T1, [_case()], RequestKey("k-1", "ukhsa", "d"))
    ingest.publish_once(T1, [_case()], RequestKey("k-1", "someone-else", "d"))
    assert len(log.sent[ingest_topic(T1)]) == 2


def test_a_quarantined_record_is_kept_small_enough_for_kafka() -> None:
    kept = kept_record(_case(name="x" * 100_000))
    assert kept["name"].startswith("x" * 1_000) and kept["name"].endswith("(100000 characters)")
    assert len(kept["name"]) < 1_100 and kept["specimen_id"] == "LEI-1"
    many = kept_record({f"f{n}": "y" * 900 for n in range(200)})
    assert set(many) == {"excerpt", "characters", "note"} and len(many["excerpt"]) == 4_000


def test_a_record_with_many_problems_keeps_twenty_reasons() -> None:
    ingest, _ = _ingest()
    [outcome] = ingest.publish(T1, [{f"unknown{n}": n for n in range(50)}])
    assert len(outcome.reasons) == 20
    assert (outcome.reasons[-1].rule, outcome.reasons[-1].message) == (
        "too-many-problems", "and 31 more problems in this record")


def test_a_quarantined_record_can_be_sent_back_as_strict_json() -> None:
    kept = kept_record({"name": "Ann\ud800", "\udfff": ["x\ud800"], "n": 1.5})
    text = json.dumps(kept, ensure_ascii=False, allow_nan=False).encode("utf-8")  # what the API sends
    assert json.loads(text) == {"name": "Ann\\ud800", "\\udfff": ["x\\ud800"], "n": 1.5}
