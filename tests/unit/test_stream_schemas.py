"""New streams without restarts, the pure parts: schemas registered before a catalog is applied (an incompatible
one refused before any is registered), a stream's schema found through the applied catalog, and a gate worker and
ingest taking on a stream they did not start with."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.catalog.compiler import load_catalog_dir, revision_of
from broker.catalog.loader import CatalogError
from broker.catalog.schemas import add_stream_from_template
from broker.demo.synthetic import positive_tests
from broker.domain.messages import Record
from broker.domain.topics import delivery_topic, ingest_topic, value_subject
from broker.errors import ConfigError, NotFoundError, RegistryError
from broker.local.toolchain import REPO_ROOT
from broker.services.ingest import Ingest
from broker.services.serde import AvroSerializer, SerializationContext
from broker.services.stream_schemas import (
    SCHEMA_ID,
    SchemaChangeRefused,
    StreamSchemas,
    register_stream_schemas,
    schema_text,
)
from tests.unit.gate_fakes import (
    INGEST,
    LA_TABLE,
    SPECIMEN_DAY,
    T1,
    T1_SCHEMA,
    HeldRefresh,
    agreement,
    catalog_document,
    make_gate,
)
from tests.unit.ingest_fakes import MemoryLog

DRILL = "ukhsa.positive-tests-drill-7"
DRILL_SCHEMA = {**T1_SCHEMA, "accord.stream": DRILL}


class Refusing(InMemorySchemaRegistry):
    """A registry whose compatibility check refuses one subject, with a reason as the real registry gives it."""

    def __init__(self, subject: str) -> None:
        super().__init__()
        self.refused = subject

    def compatibility_problems(self, subject: str, schema: str) -> list[str]:
        return ["reader field 'pillar' changed type from int to string"] if subject == self.refused else []


def _document() -> dict[str, Any]:
    return catalog_document()


def test_apply_registers_each_streams_schema_and_names_its_id_keeping_the_revision() -> None:
    registry = InMemorySchemaRegistry()
    document = _document()
    registered = register_stream_schemas(registry, document, {T1: T1_SCHEMA})
    subject = document["streams"][T1]["subject"]
    assert registered["streams"][T1][SCHEMA_ID] == registry.latest(subject).schema_id
    assert json.loads(registry.schema_by_id(registered["streams"][T1][SCHEMA_ID])) == T1_SCHEMA
    assert registered["revision"] == document["revision"] and SCHEMA_ID not in document["streams"][T1]
    assert register_stream_schemas(registry, document, {T1: T1_SCHEMA}) == registered, "applying again: same id"


def test_an_incompatible_schema_is_refused_with_the_registrys_reason_before_anything_is_registered() -> None:
    document = _document()
    document["streams"][DRILL] = {**document["streams"][T1], "subject": value_subject(ingest_topic(DRILL))}
    registry = Refusing(document["streams"][T1]["subject"])
    with pytest.raises(SchemaChangeRefused) as refused:
        register_stream_schemas(registry, document, {T1: T1_SCHEMA, DRILL: DRILL_SCHEMA})
    assert T1 in str(refused.value) and "'pillar' changed type" in str(refused.value)
    assert "nothing was applied" in str(refused.value)
    with pytest.raises(RegistryError):
        registry.latest(value_subject(ingest_topic(DRILL)))  # the compatible one was not registered either


def test_a_stream_without_a_schema_is_refused() -> None:
    with pytest.raises(ConfigError, match=T1):
        register_stream_schemas(InMemorySchemaRegistry(), _document(), {})


def _drill_catalog(registry: InMemorySchemaRegistry, with_id: bool = True) -> dict[str, Any]:
    """The unit catalog plus DRILL (T1's schema under a new id) and an agreement giving it to Leicester's DPH."""
    subject = value_subject(ingest_topic(DRILL))
    schema_id = registry.register(subject, schema_text(DRILL_SCHEMA))
    document = catalog_document(**{"drill-leicester": {**agreement("leicester-city-council", "E06000016"),
                                                       "stream": DRILL, "valid_until": "2099-01-01T00:00:00Z"}})
    document["streams"][DRILL] = {**document["streams"][T1], "subject": subject,
                                  **({SCHEMA_ID: schema_id} if with_id else {})}
    return {**document, "revision": revision_of(document)}


@pytest.mark.parametrize("with_id", [True, False])
def test_a_stream_is_found_through_the_applied_catalog_by_its_schema_id_or_its_subjects_latest(with_id: bool) -> None:
    registry = InMemorySchemaRegistry()
    document = _drill_catalog(registry, with_id)
    streams = StreamSchemas(lambda: document, registry)
    assert streams.lookup(DRILL) == DRILL_SCHEMA
    assert streams.lookup("ukhsa.never-applied") is None, "default deny: a stream no catalog names stays unknown"
    assert StreamSchemas(lambda: None, registry).lookup(DRILL) is None, "no catalog applied yet"
    assert DRILL in streams.named()


def test_a_catalog_stream_the_registry_has_no_schema_for_is_not_found_with_what_to_do() -> None:
    document = _drill_catalog(InMemorySchemaRegistry(), with_id=False)
    with pytest.raises(NotFoundError, match="accord catalog apply"):
        StreamSchemas(lambda: document, InMemorySchemaRegistry()).lookup(DRILL)


def test_ingest_takes_on_a_stream_the_catalog_names_and_refuses_one_it_does_not() -> None:
    registry = InMemorySchemaRegistry()
    document = _drill_catalog(registry)
    asked: list[str] = []

    def discover(stream: str) -> Mapping[str, Any] | None:
        asked.append(stream)
        return StreamSchemas(lambda: document, registry).lookup(stream)

    log = MemoryLog()
    ingest = Ingest(log, registry, {}, LA_TABLE, lambda: dt.date(2020, 6, 20), discover=discover)
    with pytest.raises(NotFoundError, match="no applied catalog names it"):
        ingest.schema("ukhsa.never-applied")
    assert ingest.schema(DRILL) == DRILL_SCHEMA
    assert ingest.schema(DRILL) == DRILL_SCHEMA
    assert asked == ["ukhsa.never-applied", DRILL], "a stream once found is not looked up again"


def test_a_gate_takes_on_a_new_stream_subscribes_between_transactions_and_delivers_it() -> None:
    registry = InMemorySchemaRegistry()
    streams = StreamSchemas(lambda: None, registry)
    taken: list[str] = []

    def adopt(stream: str, entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
        taken.append(stream)
        return streams.schema_of(stream, entry)

    h = make_gate(registry=registry, adopt_stream=adopt)
    h.gate.start()
    assert h.gate.topics == [INGEST] and not taken
    h.control.append_catalog(_drill_catalog(registry))
    h.gate.step()  # the catalog is read after this (empty) poll: the stream is taken on and planned
    assert taken == [DRILL] and not h.stage.subscriptions
    drill_topic = ingest_topic(DRILL)
    case = positive_tests(SPECIMEN_DAY, {"leicester": 1}, seed=7)[0]
    framed = AvroSerializer(registry, json.dumps(DRILL_SCHEMA))(case, SerializationContext(drill_topic))
    h.stage.queue(Record(drill_topic, 0, 0, b"k", framed, ()))
    h.gate.step()
    assert h.stage.subscriptions == [([INGEST, drill_topic], [drill_topic])], "the new topic, from its start"
    # (FakeStage.subscribe refuses to run inside an open transaction)
    assert h.stage.calls[h.stage.calls.index("subscribe") + 1] == "poll", "subscribed before the next poll"
    delivered = h.delivered(delivery_topic("leicester-city-council", "dph", DRILL))
    assert [s.headers["accord.source"] for s in delivered] == [f"{drill_topic}/0/0".encode()]
    h.gate.step()
    assert len(h.stage.subscriptions) == 1 and taken == [DRILL], "taken on once"


def test_a_stream_whose_schema_cannot_be_had_yet_leaves_the_others_alone_and_is_tried_again() -> None:
    registry = InMemorySchemaRegistry()
    attempts: list[str] = []

    def adopt(stream: str, entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
        attempts.append(stream)
        raise RegistryError(0, -1, "registry unreachable")

    h = make_gate(registry=registry, adopt_stream=adopt, replan_every_s=10)
    h.gate.start()
    h.control.append_catalog(_drill_catalog(registry))
    h.stage.queue(h.record(0))
    h.gate.step()
    assert attempts == [DRILL] and h.delivered(delivery_topic("leicester-city-council", "dph", T1))
    h.clock.now += dt.timedelta(seconds=11)
    h.gate.step()
    assert attempts == [DRILL, DRILL] and h.gate.topics == [INGEST]


def test_a_stream_taken_on_at_a_background_refresh_is_planned_before_its_records_are_routed() -> None:
    """A gate that refreshes its plans in the background (as open_gate runs it) takes a stream on when the registry
    answers at last: planned there and then, not by a refresh still to come, so its first records are delivered."""
    registry = InMemorySchemaRegistry()
    streams = StreamSchemas(lambda: None, registry)
    reachable = [False]

    def adopt(stream: str, entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if not reachable[0]:
            raise RegistryError(0, -1, "registry unreachable")
        return streams.schema_of(stream, entry)

    engine = HeldRefresh()  # a refresh asked on its own thread would not answer before the record is routed
    h = make_gate(registry=registry, adopt_stream=adopt, replan_every_s=10, refresh_in_background=True,
                  engine=engine)
    h.gate.start()
    h.control.append_catalog(_drill_catalog(registry))
    h.gate.step()
    assert h.gate.topics == [INGEST]
    reachable[0] = True
    h.clock.now += dt.timedelta(seconds=11)
    h.gate.step()  # the periodic re-plan: the stream is taken on, and planned on this thread
    drill_topic = ingest_topic(DRILL)
    case = positive_tests(SPECIMEN_DAY, {"leicester": 1}, seed=7)[0]
    framed = AvroSerializer(registry, json.dumps(DRILL_SCHEMA))(case, SerializationContext(drill_topic))
    h.stage.queue(Record(drill_topic, 0, 0, b"k", framed, ()))
    h.gate.step()
    engine.release.set()

    delivered = h.delivered(delivery_topic("leicester-city-council", "dph", DRILL))
    assert [s.headers["accord.source"] for s in delivered] == [f"{drill_topic}/0/0".encode()]


def test_a_stream_switched_on_from_a_template_compiles_under_its_new_id(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(REPO_ROOT / "catalog", catalog)
    schema = add_stream_from_template(catalog, REPO_ROOT / "schemas", T1, DRILL, owner="ukhsa",
                                      classification="special-category")
    loaded = load_catalog_dir(catalog, REPO_ROOT / "schemas")
    assert loaded.schemas[DRILL] == {**T1_SCHEMA, "accord.stream": DRILL} == json.loads(schema.read_text())
    assert loaded.document["streams"][DRILL]["fields"] == loaded.document["streams"][T1]["fields"]
    assert loaded.document["streams"][DRILL]["subject"] == value_subject(ingest_topic(DRILL))
    with pytest.raises(ConfigError, match="already"):
        add_stream_from_template(catalog, REPO_ROOT / "schemas", T1, DRILL, owner="ukhsa", classification="official")
    with pytest.raises(ConfigError, match="no template stream"):
        add_stream_from_template(catalog, REPO_ROOT / "schemas", "ukhsa.nothing", "ukhsa.other", owner="ukhsa",
                                 classification="official")


def test_a_schema_file_a_stream_names_is_used_under_its_id_and_a_missing_one_is_reported_at_its_line(
        tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(REPO_ROOT / "catalog", catalog)
    (tmp_path / "t1-copy.avsc").write_text(json.dumps(T1_SCHEMA))
    streams = catalog / "streams.yaml"
    shipped = streams.read_text()
    streams.write_text(shipped + f"  - id: {DRILL}\n    owner: ukhsa\n    classification: official\n"
                                 "    schema: ../t1-copy.avsc\n")
    assert load_catalog_dir(catalog, REPO_ROOT / "schemas").schemas[DRILL]["accord.stream"] == DRILL
    streams.write_text(shipped + f"  - id: {DRILL}\n    owner: ukhsa\n    classification: official\n"
                                 "    schema: ../nowhere.avsc\n")
    line = len(shipped.splitlines()) + 4
    with pytest.raises(CatalogError, match=rf"streams.yaml:{line}: .*schema.*cannot read nowhere.avsc"):
        load_catalog_dir(catalog, REPO_ROOT / "schemas")
