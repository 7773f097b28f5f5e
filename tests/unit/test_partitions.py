"""Partition counts per stream (catalog, loader, compiled document, rendered topics) and the key that keeps one
area's records in order: at ingest, on every delivery topic, whatever key a publisher wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.catalog import CatalogError, load_and_compile
from broker.catalog.loader import load_stream_partitions
from broker.cli.deploy import render_k8s
from broker.demo.synthetic import nhs_number
from broker.domain.partitions import (
    DEFAULT_DELIVERY_PARTITIONS,
    DEFAULT_INGEST_PARTITIONS,
    StreamPartitions,
    growth,
    partitions_of,
    resizes,
    stream_key,
    wanted_counts,
)
from broker.domain.topics import delivered_stream, delivery_topic, ingest_topic
from tests.unit.catalog_support import SCHEMAS, copy_catalog, edit, line_of, problems
from tests.unit.gate_fakes import INGEST, T1, catalog_document, make_gate

T2 = "nhstt.cases-to-trace"
T2_ENTRY = "  - id: nhstt.cases-to-trace         # T2\n"


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return copy_catalog(tmp_path)


# -- the catalog ---------------------------------------------------------------------------------------------------
def test_streams_get_twelve_ingest_partitions_and_one_delivery_partition_unless_they_say_otherwise() -> None:
    counts = load_stream_partitions(Path(SCHEMAS).parent / "catalog")
    assert counts[T1] == StreamPartitions(ingest=12, delivery=1) == StreamPartitions()
    assert counts[T2] == StreamPartitions(ingest=12, delivery=3)


def test_stated_counts_reach_the_compiled_document(catalog: Path) -> None:
    edit(catalog / "streams.yaml", T2_ENTRY, T2_ENTRY + "    partitions: 24\n")
    document = load_and_compile(catalog, SCHEMAS)
    assert (document["streams"][T2]["partitions"], document["streams"][T2]["delivery_partitions"]) == (24, 3)
    assert partitions_of(document, T2) == StreamPartitions(24, 3)
    assert partitions_of(document, T1) == StreamPartitions(DEFAULT_INGEST_PARTITIONS, DEFAULT_DELIVERY_PARTITIONS)


@pytest.mark.parametrize(("written", "message"), [
    ("0", "0 is too small; it must be at least 1"),
    ("-4", "-4 is too small; it must be at least 1"),
    ("1001", "1001 is too large; it must be at most 1000"),
    ("'12'", "'12' is not a whole number; write one without quotes, e.g. 12"),
    ("12.5", "12.5 is not a whole number; write one without quotes, e.g. 12"),
    ("true", "True is not a whole number; write one without quotes, e.g. 12"),
])
def test_a_partition_count_that_is_not_a_whole_number_from_1_to_1000_is_refused_at_its_line(
        catalog: Path, written: str, message: str) -> None:
    streams = catalog / "streams.yaml"
    edit(streams, T2_ENTRY, T2_ENTRY + f"    partitions: {written}\n")
    expected = f"catalog/streams.yaml:{line_of(streams, 'partitions: ' + written)}: streams.1.partitions: {message}"
    assert expected in problems(catalog)
    with pytest.raises(CatalogError) as caught:
        load_stream_partitions(catalog)  # what the API and gate workers read before they make ingest topics
    assert expected in str(caught.value)


def test_a_bad_delivery_partition_count_names_its_field(catalog: Path) -> None:
    streams = catalog / "streams.yaml"
    edit(streams, "    delivery_partitions: 3\n", "    delivery_partitions: 5000\n")
    assert (f"catalog/streams.yaml:{line_of(streams, 'delivery_partitions: 5000')}: streams.1.delivery_partitions: "
            "5000 is too large; it must be at most 1000") in problems(catalog)


def test_without_a_streams_file_every_stream_gets_the_defaults(tmp_path: Path) -> None:
    assert load_stream_partitions(tmp_path) == {}


def test_rendered_ingest_topics_take_the_catalogs_counts(catalog: Path) -> None:
    edit(catalog / "streams.yaml", T2_ENTRY, T2_ENTRY + "    partitions: 30\n")
    topics = {t["spec"]["topicName"]: t["spec"]["partitions"]
              for t in render_k8s(load_and_compile(catalog, SCHEMAS))["topics.yaml"]}
    assert (topics[ingest_topic(T2)], topics[ingest_topic(T1)]) == (30, 12)


# -- the key -------------------------------------------------------------------------------------------------------
def test_the_key_is_the_first_jurisdiction_field_with_a_value() -> None:
    schema = {"accord.jurisdiction": ["utla", "ltla"]}
    assert stream_key(schema, {"utla": "E10000018", "ltla": "E07000129"}) == b"E10000018"
    assert stream_key(schema, {"utla": None, "ltla": "E07000129"}) == b"E07000129"
    assert stream_key(schema, {"utla": "", "ltla": None}) is None
    assert stream_key({}, {"utla": "E10000018"}) is None


def test_the_gate_keys_each_delivery_by_area_not_by_the_publishers_key() -> None:
    h = make_gate()
    h.gate.start()
    # A publisher writing the ingest topic with its own client keyed this row by the NHS number.
    record = h.record(7, "blaby")
    h.stage.queue(record.__class__(INGEST, 5, 7, nhs_number(1234).encode(), record.value, ()))
    h.gate.step()
    sent = h.delivered(delivery_topic("leicestershire-county-council", "dph", T1))
    assert [s.key for s in sent] == [b"E10000018"]


def test_delivery_topics_are_made_with_the_streams_delivery_partitions() -> None:
    document = catalog_document()
    document["streams"][T1]["delivery_partitions"] = 4
    h = make_gate(document)
    h.gate.start()
    assert h.ensured and set(h.ensured.values()) == {4}
    assert delivery_topic("leicester-city-council", "dph", T1) in h.ensured


def test_a_catalog_compiled_before_partitions_were_stated_gives_delivery_topics_one() -> None:
    h = make_gate()  # the fakes' document names no partitions
    h.gate.start()
    assert h.ensured and set(h.ensured.values()) == {DEFAULT_DELIVERY_PARTITIONS}


# -- growing existing topics ---------------------------------------------------------------------------------------
def test_existing_topics_are_compared_with_the_catalog_and_only_grown() -> None:
    streams = {T1: StreamPartitions(12, 3), T2: StreamPartitions(6, 1)}
    leicester, blaby = delivery_topic("leicester-city-council", "dph", T1), delivery_topic("blaby", "eh", T2)
    current = {ingest_topic(T1): 4, ingest_topic(T2): 8, leicester: 1, blaby: 1, "deliver.x.y.other.stream": 1,
               "_accord.control": 1}
    wanted = wanted_counts(streams, current)
    assert wanted == {ingest_topic(T1): 12, ingest_topic(T2): 6, leicester: 3, blaby: 1}
    found = resizes(current, wanted)
    assert [(r.topic, r.current, r.wanted) for r in found] == [
        (leicester, 1, 3), (ingest_topic(T2), 8, 6), (ingest_topic(T1), 4, 12)]
    assert growth(found) == {ingest_topic(T1): 12, leicester: 3}  # ingest.nhstt... keeps its 8: never shrunk
    assert "out of order" in found[0].describe() and "cannot take partitions away" in found[1].describe()


def test_a_topic_the_catalog_does_not_size_is_left_alone() -> None:
    assert resizes({"ingest.a.b": 4}, {"ingest.c.d": 12}) == []


def test_delivery_topics_name_their_stream() -> None:
    assert delivered_stream(delivery_topic("leicester-city-council", "dph", T1)) == T1
    assert delivered_stream(ingest_topic(T1)) is None
    assert delivered_stream("deliver.only-two") is None
