"""Avro serde over the in-memory registry: round trips, evolution, and errors a publisher can act on."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import fastavro
import pytest

from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.domain.schemas import RegisteredSchema
from broker.domain.wire import frame, unframe
from broker.errors import RegistryError, SerdeError
from broker.services import serde
from broker.services.serde import AvroDeserializer, AvroSerializer, SerializationContext

CASE_V1 = json.dumps({
    "type": "record", "name": "PositiveTest", "namespace": "ukhsa",
    "fields": [
        {"name": "case_id", "type": "string"},
        {"name": "specimen_date", "type": {"type": "int", "logicalType": "date"}},
        {"name": "reported_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "test_type", "type": {"type": "enum", "name": "TestType", "symbols": ["PCR", "LFD"]}},
        {"name": "ltla", "type": ["null", "string"], "default": None},
    ],
})
CASE_V2 = json.dumps({**json.loads(CASE_V1), "fields": [
    *json.loads(CASE_V1)["fields"], {"name": "age_band", "type": "string", "default": "unknown"}]})
VALUE = SerializationContext("ingest.positive-tests")
KEY = SerializationContext("ingest.positive-tests", "key")


def _case(**changes: Any) -> dict[str, Any]:
    return {"case_id": "C-1", "specimen_date": date(2024, 2, 29),
            "reported_at": datetime(2024, 3, 1, 9, 30, 15, 123000, tzinfo=UTC), "test_type": "PCR",
            "ltla": "E08000025"} | changes


class CountingRegistry(InMemorySchemaRegistry):
    """The in-memory registry, counting calls so tests can see what the serde caches."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[tuple[str, object]] = Counter()

    def register(self, subject: str, schema: str) -> int:
        self.calls["register", subject] += 1
        return super().register(subject, schema)

    def schema_by_id(self, schema_id: int) -> str:
        self.calls["schema_by_id", schema_id] += 1
        return super().schema_by_id(schema_id)

    def latest(self, subject: str) -> RegisteredSchema:
        self.calls["latest", subject] += 1
        return super().latest(subject)


@pytest.fixture
def registry() -> CountingRegistry:
    return CountingRegistry()


@pytest.mark.parametrize("ltla", ["E08000025", None])
def test_round_trip_keeps_dates_timestamps_enums_and_unions(registry: CountingRegistry, ltla: str | None) -> None:
    record = _case(ltla=ltla)
    data = AvroSerializer(registry, CASE_V1)(record, VALUE)
    assert data is not None
    decoded = AvroDeserializer(registry)(data, VALUE)
    assert decoded == record
    assert decoded is not None and type(decoded["specimen_date"]) is date


def test_header_names_the_id_registered_under_topic_and_field(registry: CountingRegistry) -> None:
    registry.register("unrelated-value", '"string"')
    serialize = AvroSerializer(registry, CASE_V1)
    data = serialize(_case(), VALUE)
    key_data = serialize(_case(), KEY)
    assert data is not None and key_data is not None
    assert unframe(data)[0] == unframe(key_data)[0] == 2
    assert registry.latest("ingest.positive-tests-value").schema_id == 2
    assert registry.latest("ingest.positive-tests-key").schema_id == 2


def test_serializer_registers_once_per_subject(registry: CountingRegistry) -> None:
    serialize = AvroSerializer(registry, CASE_V1)
    for n in range(5):
        serialize(_case(case_id=f"C-{n}"), VALUE)
        serialize(_case(case_id=f"C-{n}"), SerializationContext("ingest.other"))
    assert registry.calls == Counter({("register", "ingest.positive-tests-value"): 1,
                                      ("register", "ingest.other-value"): 1})


def test_deserializer_asks_the_registry_once_per_id(registry: CountingRegistry) -> None:
    old = [AvroSerializer(registry, CASE_V1)(_case(case_id=f"C-{n}"), VALUE) for n in range(3)]
    new = [AvroSerializer(registry, CASE_V2)(_case(case_id=f"C-{n}", age_band="40-49"), VALUE) for n in range(3)]
    deserialize = AvroDeserializer(registry)
    decoded = [deserialize(data, VALUE) for data in old + new + old]
    assert [d["case_id"] for d in decoded if d is not None] == ["C-0", "C-1", "C-2"] * 3
    lookups = {key: count for key, count in registry.calls.items() if key[0] == "schema_by_id"}
    assert lookups == {("schema_by_id", 1): 1, ("schema_by_id", 2): 1}


def test_none_passes_through_as_a_tombstone(registry: CountingRegistry) -> None:
    assert AvroSerializer(registry, CASE_V1)(None, VALUE) is None
    assert AvroDeserializer(registry)(None, VALUE) is None
    assert not registry.calls


def test_v1_data_read_with_a_v2_reader_gets_the_new_fields_default(registry: CountingRegistry) -> None:
    data = AvroSerializer(registry, CASE_V1)(_case(), VALUE)
    assert AvroDeserializer(registry, reader_schema=CASE_V2)(data, VALUE) == _case(age_band="unknown")


def test_a_reader_schema_equal_to_the_writers_is_compared_once_not_per_record(
        registry: CountingRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """fastavro compares writer and reader schemas on every record it is given both for; an equal reader (the gate's
    stream schema, parsed apart from the registry's copy) is therefore not handed over: the record is read as
    written, as fastavro would after comparing."""
    readers: list[object] = []
    read = fastavro.schemaless_reader

    def recording(buffer: Any, writer: Any, reader: Any) -> Any:
        readers.append(reader)
        return read(buffer, writer, reader)
    monkeypatch.setattr(serde, "schemaless_reader", recording)
    v1, v2 = (AvroSerializer(registry, schema)(_case(), VALUE) for schema in (CASE_V1, CASE_V2))
    decode = AvroDeserializer(registry, reader_schema=json.dumps(json.loads(CASE_V1)))

    assert [decode(v1, VALUE), decode(v1, VALUE)] == [_case(), _case()]
    assert readers == [None, None]
    assert decode(v2, VALUE) == _case()  # v2's age_band is not in the reader schema: resolved away
    assert readers[-1] is not None


def test_reader_that_cannot_read_the_writer_says_so(registry: CountingRegistry) -> None:
    data = AvroSerializer(registry, CASE_V1)(_case(), VALUE)
    reader = json.loads(CASE_V2)
    reader["fields"][-1].pop("default")
    with pytest.raises(SerdeError, match="written with schema id 1 cannot be read with the reader schema") as err:
        AvroDeserializer(registry, reader_schema=json.dumps(reader))(data, VALUE)
    assert "age_band" in str(err.value)


@pytest.mark.parametrize(("record", "field"), [
    (_case(specimen_date=None), "ukhsa.PositiveTest.specimen_date"),
    (_case(reported_at=[1]), "ukhsa.PositiveTest.reported_at"),
    (_case(test_type="ANTIBODY"), "ukhsa.PositiveTest.test_type"),
    (_case(ltla=25), "ukhsa.PositiveTest.ltla"),
    ({k: v for k, v in _case().items() if k != "case_id"}, "ukhsa.PositiveTest.case_id"),
])
def test_record_that_does_not_fit_names_the_field(registry: CountingRegistry, record: dict[str, Any],
                                                  field: str) -> None:
    with pytest.raises(SerdeError) as err:
        AvroSerializer(registry, CASE_V1)(record, VALUE)
    message = str(err.value)
    assert message.startswith("value on topic 'ingest.positive-tests': record does not fit schema ukhsa.PositiveTest")
    assert f"at field {field}:" in message
    assert not registry.calls


def test_unparseable_logical_value_quotes_the_value(registry: CountingRegistry) -> None:
    # fastavro's validator fails on this one instead of naming the field, so the value is what points to it.
    with pytest.raises(SerdeError, match=r"record does not fit schema ukhsa\.PositiveTest: .*'yesterday'"):
        AvroSerializer(registry, CASE_V1)(_case(specimen_date="yesterday"), VALUE)


def test_wrong_magic_byte_names_the_topic_and_guesses_the_format(registry: CountingRegistry) -> None:
    with pytest.raises(SerdeError) as err:
        AvroDeserializer(registry)(b'{"case_id": "C-1"}', VALUE)
    assert str(err.value) == "value on topic 'ingest.positive-tests': expected magic byte 0, got 0x7b (is this JSON?)"


def test_truncated_header_is_reported_before_any_registry_call(registry: CountingRegistry) -> None:
    with pytest.raises(SerdeError, match="truncated header: message is 3 bytes"):
        AvroDeserializer(registry)(b"\x00\x00\x00", KEY)
    assert not registry.calls


def test_truncated_body_says_it_does_not_decode(registry: CountingRegistry) -> None:
    data = AvroSerializer(registry, CASE_V1)(_case(), VALUE)
    assert data is not None
    with pytest.raises(SerdeError, match=r"does not decode with schema id 1 .*truncated"):
        AvroDeserializer(registry)(data[:-4], VALUE)


@pytest.mark.parametrize("body", [b"\xff" * 12, b"\x02\xff\x02\x00\x00\x00\x00", b"\x7f"])
def test_garbage_body_is_a_serde_error(registry: CountingRegistry, body: bytes) -> None:
    AvroSerializer(registry, CASE_V1)(_case(), VALUE)
    with pytest.raises(SerdeError, match="does not decode with schema id 1"):
        AvroDeserializer(registry)(frame(1, body), VALUE)


def test_bytes_left_after_the_record_are_an_error(registry: CountingRegistry) -> None:
    data = AvroSerializer(registry, CASE_V1)(_case(), VALUE)
    assert data is not None
    with pytest.raises(SerdeError, match="3 bytes left over after the record"):
        AvroDeserializer(registry)(data + b"abc", VALUE)


def test_unknown_schema_id_is_a_serde_error_naming_the_id(registry: CountingRegistry) -> None:
    with pytest.raises(SerdeError, match="schema id 99 is not in the schema registry") as err:
        AvroDeserializer(registry)(frame(99, b"\x02x"), VALUE)
    assert isinstance(err.value.__cause__, RegistryError)


def test_unreachable_registry_stays_a_registry_error() -> None:
    class Unreachable(InMemorySchemaRegistry):
        def schema_by_id(self, schema_id: int) -> str:
            raise RegistryError(0, -1, "GET http://registry:8081/schemas/ids/1: ConnectError")

    # A record must not be quarantined as bad data because the registry is down.
    with pytest.raises(RegistryError) as err:
        AvroDeserializer(Unreachable())(frame(1, b""), VALUE)
    assert not isinstance(err.value, SerdeError) and err.value.status == 0


def test_non_record_writer_schema_is_refused(registry: CountingRegistry) -> None:
    schema_id = registry.register("ingest.positive-tests-key", '"string"')
    with pytest.raises(SerdeError, match="schema id 1 is not a record schema"):
        AvroDeserializer(registry)(frame(schema_id, b"\x06C-1"), KEY)


def test_without_auto_register_the_subjects_latest_schema_is_used(registry: CountingRegistry) -> None:
    schema_id = registry.register("ingest.positive-tests-value", CASE_V1)
    data = AvroSerializer(registry, CASE_V1, auto_register=False)(_case(), VALUE)
    assert data is not None and unframe(data)[0] == schema_id
    assert registry.calls[("register", "ingest.positive-tests-value")] == 1


def test_without_auto_register_a_different_latest_schema_is_refused(registry: CountingRegistry) -> None:
    registry.register("ingest.positive-tests-value", CASE_V2)
    with pytest.raises(SerdeError, match="latest version \\(1, schema id 1\\) is not this serializer's schema"):
        AvroSerializer(registry, CASE_V1, auto_register=False)(_case(), VALUE)


def test_without_auto_register_an_unknown_subject_is_the_registrys_40401(registry: CountingRegistry) -> None:
    with pytest.raises(RegistryError) as err:
        AvroSerializer(registry, CASE_V1, auto_register=False)(_case(), VALUE)
    assert err.value.error_code == 40401


def test_custom_subject_name_strategy(registry: CountingRegistry) -> None:
    serialize = AvroSerializer(registry, CASE_V1, subject_name_strategy=lambda ctx, name: f"{name}")
    serialize(_case(), VALUE)
    assert registry.latest("ukhsa.PositiveTest").schema_id == 1


@pytest.mark.parametrize(("schema", "expected"), [
    ("{oops", "writer schema is not JSON"),
    ('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "strng"}]}', "not a valid Avro schema"),
])
def test_invalid_writer_schema_fails_at_construction(registry: CountingRegistry, schema: str, expected: str) -> None:
    with pytest.raises(SerdeError, match=expected):
        AvroSerializer(registry, schema)
