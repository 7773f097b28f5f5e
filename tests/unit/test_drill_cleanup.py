"""After a drill: the topics of its drill streams and drill bodies are deleted, and only they (never a real stream's
or a real subscriber's, nor another run's), once the catalog in force names none of its streams and a gate worker
applied it; what could not be deleted is a problem of the run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from broker.domain.drill_topics import is_run_stream, run_topics
from broker.errors import DrillError, ServiceError
from broker.services.drill_cleanup import remove_topics

RUN = "abc123"
TWIN = "ukhsa.drill-abc123-positive-tests"
MINE = [f"ingest.{TWIN}", f"quarantine.{TWIN}", f"deliver.drill-abc123-t1.analyst.{TWIN}",
        f"deliver.drill-abc123-t1-county.analyst.{TWIN}"]
NOT_MINE = [
    "ingest.ukhsa.positive-tests", "deliver.leicester-city-council.dph.ukhsa.positive-tests",   # real ones
    "ingest.ukhsa.drill-abc1234-positive-tests",                    # another run whose id starts like this one's
    "ingest.ukhsa.drill-ffffff-positive-tests", "deliver.drill-ffffff-t1.analyst.ukhsa.drill-ffffff-positive-tests",
    f"deliver.leicester-city-council.dph.{TWIN}",                   # a real body's topic of the twin: never made
    f"deliver.drill-abc123-t1.analyst.{TWIN}.extra", "ingest.nis.drill-abc123-vaccination-uptake",  # not recorded
    "_accord.control", f"deliver.drill-abc123-t1..{TWIN}",
]


def test_only_the_topics_of_the_runs_own_streams_and_drill_bodies_are_the_runs() -> None:
    assert run_topics([*NOT_MINE, *MINE], RUN, [TWIN]) == sorted(MINE)
    # A stream the run did not name as its own is not trusted, even if the run says it made it.
    assert run_topics([*NOT_MINE, *MINE, "ingest.ukhsa.positive-tests"], RUN, [TWIN, "ukhsa.positive-tests"]) == \
        sorted(MINE)
    assert run_topics(MINE, "ffffff", [TWIN]) == []
    assert is_run_stream(TWIN, RUN) and not is_run_stream("ukhsa.drill-abc123-", RUN)
    assert not is_run_stream("drill-abc123-positive-tests", RUN)
    for bad in ("", "abc-123", "abc.123", "ABC123"):
        with pytest.raises(DrillError, match="letters and digits only"):
            run_topics(MINE, bad, [TWIN])


class FakeTopics:
    def __init__(self, names: Sequence[str], applied: bool = True, refuse: Mapping[str, str] | None = None) -> None:
        self.existing, self.applied, self.refuse = set(names), applied, dict(refuse or {})
        self.deleted: list[str] = []

    def names(self) -> set[str]:
        return set(self.existing)

    def gates_applied(self, timeout_s: float) -> bool:
        return self.applied

    def delete(self, names: Sequence[str]) -> dict[str, str]:
        done = [n for n in names if n not in self.refuse]
        self.deleted.extend(done)
        self.existing -= set(done)
        return {n: why for n, why in self.refuse.items() if n in names}


class Catalog:
    def __init__(self, document: Mapping[str, Any] | None) -> None:
        self.document = document

    def current(self) -> Mapping[str, Any] | None:
        return self.document


RESTORED = Catalog({"streams": {"ukhsa.positive-tests": {}}})


def test_the_runs_topics_are_deleted_once_the_gates_applied_the_catalog_without_them() -> None:
    topics = FakeTopics([*MINE, *NOT_MINE])
    assert remove_topics(topics, RESTORED, RUN, [TWIN]) == []
    assert sorted(topics.deleted) == sorted(MINE) and topics.existing == set(NOT_MINE)
    assert remove_topics(FakeTopics(MINE), RESTORED, RUN, []) == []     # no drill streams: nothing to do


def test_nothing_is_deleted_while_the_catalog_names_a_drill_stream_or_the_gates_have_not_applied_it() -> None:
    topics = FakeTopics(MINE)
    [problem] = remove_topics(topics, Catalog({"streams": {TWIN: {}}}), RUN, [TWIN])
    assert f"the catalog in force still names {TWIN}" in problem and topics.deleted == []
    [problem] = remove_topics(FakeTopics(MINE, applied=False), RESTORED, RUN, [TWIN])
    assert "no gate worker reported applying the catalog without them" in problem


def test_a_topic_the_cluster_would_not_delete_is_a_problem_of_the_run() -> None:
    refused = f"deliver.drill-abc123-t1.analyst.{TWIN}"
    topics = FakeTopics(MINE, refuse={refused: "TopicAuthorizationFailedError"})
    assert remove_topics(topics, RESTORED, RUN, [TWIN]) == [
        f"topic {refused} of drill run {RUN} was not deleted (TopicAuthorizationFailedError); delete it"]
    assert sorted(topics.deleted) == sorted(set(MINE) - {refused})


class Unreachable(FakeTopics):
    def names(self) -> set[str]:
        raise ServiceError("could not list the topics of 127.0.0.1:9")


def test_a_cluster_that_cannot_list_its_topics_leaves_a_problem_not_an_error() -> None:
    [problem] = remove_topics(Unreachable(MINE), RESTORED, RUN, [TWIN])
    assert "were not deleted (could not list the topics of 127.0.0.1:9)" in problem
