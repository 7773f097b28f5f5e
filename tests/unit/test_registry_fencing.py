"""The registry's write protocol against an in-memory log that fences its writers as Kafka's transactions do."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from broker.domain.registry import Change, SchemaVersion
from broker.errors import RegistryError, WriterFenced
from broker.services.registry import WRITE_ATTEMPTS, Registry


def _schema(name: str) -> str:
    return json.dumps({"type": "record", "name": name, "fields": [{"name": "id", "type": "string"}]})


class SharedLog:
    """One log and its writer epoch: taking over bumps the epoch, and only the newest epoch may append."""

    def __init__(self) -> None:
        self.records: list[Change] = []
        self.epoch = 0


class FencedSink:
    """One registry's view of the shared log; `before_append` lets a test put a rival's write in the gap."""

    def __init__(self, log: SharedLog, registry: Registry) -> None:
        self.log, self.registry = log, registry
        self.epoch: int | None = None
        self.applied = 0
        self.before_append: Callable[[], None] = lambda: None

    def catch_up(self) -> None:
        if self.epoch != self.log.epoch or self.epoch is None:
            self.log.epoch += 1
            self.epoch = self.log.epoch
        self._apply_to_end()

    def append(self, changes: list[Change]) -> None:
        self.before_append()
        if self.epoch != self.log.epoch:
            self.epoch = None
            raise WriterFenced("another writer took over")
        self.log.records.extend(changes)
        self._apply_to_end()

    def _apply_to_end(self) -> None:
        for key, value in self.log.records[self.applied:]:
            self.registry.apply(key, value)
        self.applied = len(self.log.records)


def _pair() -> tuple[Registry, FencedSink, Registry, FencedSink, SharedLog]:
    log = SharedLog()
    pauses: list[int] = []
    first, second = Registry(pause=pauses.append), Registry(pause=pauses.append)
    first_sink, second_sink = FencedSink(log, first), FencedSink(log, second)
    first.bind(first_sink)
    second.bind(second_sink)
    return first, first_sink, second, second_sink, log


def test_a_writer_fenced_by_a_rival_plans_again_at_the_next_version() -> None:
    first, first_sink, second, _, log = _pair()
    first.set_config("case-value", "NONE")  # any two schemas may follow each other
    rivals: list[SchemaVersion] = []

    def rival_registers_once() -> None:
        if not rivals:
            rivals.append(second.register("case-value", _schema("Rival")))
    first_sink.before_append = rival_registers_once

    mine = first.register("case-value", _schema("Mine"))
    assert [(v.version, v.schema_id) for v in (*rivals, mine)] == [(1, rivals[0].schema_id), (2, mine.schema_id)]
    assert [key for key, _ in log.records] == ["config/case-value", "schema/case-value/1", "schema/case-value/2"]
    assert [v.schema_id for v in first.read(lambda s: s.versions("case-value"))] == [rivals[0].schema_id,
                                                                                     mine.schema_id]


def test_an_existing_schema_found_after_catching_up_is_not_written_again() -> None:
    first, _, second, _, log = _pair()
    second.register("case-value", _schema("Same"))
    assert first.read(lambda s: s.subjects()) == []  # not followed yet
    assert first.register("case-value", _schema("Same")).version == 1
    assert len(log.records) == 1


def test_a_writer_always_fenced_gives_up_with_nothing_written() -> None:
    first, first_sink, _, _, log = _pair()

    def rival_takes_over() -> None:
        log.epoch += 1
    first_sink.before_append = rival_takes_over
    with pytest.raises(RegistryError) as refused:
        first.register("case-value", _schema("Mine"))
    assert (refused.value.status, refused.value.error_code) == (500, 50001)
    assert str(WRITE_ATTEMPTS) in refused.value.message
    assert log.records == []
