"""Delivery fences from the policy state: which topics stay readable, their retention, when ended ones are emptied
(broker/domain/fences.py), and the keeper that applies them (broker/services/fences.py) on an in-memory cluster."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from broker.domain.control import PolicyState
from broker.domain.disputes import stamp
from broker.domain.fences import fences
from broker.services.fences import FenceKeeper

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
T1 = "ukhsa.positive-tests"
DPH = f"deliver.leicester-city-council.dph.{T1}"
ANALYST = f"deliver.leicester-city-council.analyst.{T1}"


def agreement(until: dt.datetime, retention: dt.timedelta | None = None, roles: tuple[str, ...] = ("dph",),
              since: dt.datetime = NOW - 30 * DAY) -> dict[str, Any]:
    return {"subscriber": "leicester-city-council", "stream": T1, "valid_from": stamp(since),
            "valid_until": stamp(until), "tiers": [{"name": r, "roles": [r]} for r in roles],
            "retention_s": None if retention is None else int(retention.total_seconds())}


def state(agreements: Mapping[str, Any], revoked: Mapping[str, Any] | None = None,
          grants: Mapping[str, Any] | None = None, offset: int = 1) -> PolicyState:
    return PolicyState(catalog={"agreements": dict(agreements)}, revoked=MappingProxyType(dict(revoked or {})),
                       grants=MappingProxyType(dict(grants or {})), offset=offset)


def test_a_topic_in_force_stays_open_with_its_agreements_retention() -> None:
    found = fences(state({"a": agreement(NOW + DAY, 28 * DAY, roles=("dph", "analyst"))}), NOW)
    assert {t: (f.open, f.retention) for t, f in found.items()} == {DPH: (True, 28 * DAY), ANALYST: (True, 28 * DAY)}


def test_two_agreements_on_one_topic_keep_the_shorter_retention_and_it_stays_open_while_either_is_in_force() -> None:
    both = {"long": agreement(NOW + DAY, 28 * DAY), "short": agreement(NOW + 2 * DAY, 7 * DAY)}
    assert fences(state(both), NOW)[DPH].retention == 7 * DAY
    one_revoked = state(both, revoked={"short": {"at": stamp(NOW - HOUR)}})
    assert (fences(one_revoked, NOW)[DPH].open, fences(one_revoked, NOW)[DPH].retention) == (True, 28 * DAY)


def test_a_revoked_agreements_topic_is_fenced_from_the_revocation_and_emptied_after_the_grace() -> None:
    revoked = state({"a": agreement(NOW + DAY)}, revoked={"a": {"at": stamp(NOW - HOUR)}})
    fence = fences(revoked, NOW)[DPH]
    assert (fence.open, fence.ended_at) == (False, NOW - HOUR)
    assert not fence.delete_due(NOW, 2 * HOUR)
    assert fence.delete_due(NOW + HOUR, 2 * HOUR)


def test_an_expired_agreement_is_fenced_from_its_end() -> None:
    fence = fences(state({"a": agreement(NOW - 3 * HOUR)}), NOW)[DPH]
    assert (fence.open, fence.ended_at, fence.because) == (False, NOW - 3 * HOUR, ("a",))


def test_a_grant_keeps_a_topic_open_and_its_withdrawal_fences_it_at_once() -> None:
    granted = state({}, grants={"g1": agreement(NOW + DAY)})
    assert fences(granted, NOW)[DPH].open
    assert DPH not in fences(state({}), NOW)  # withdrawn: the state no longer names the topic ...
    assert not fences(state({}), NOW, existing=[DPH])[DPH].open  # ... so the existing topic is fenced


def test_an_agreement_not_yet_in_force_is_fenced_but_has_nothing_to_delete() -> None:
    fence = fences(state({"a": agreement(NOW + 2 * DAY, since=NOW + DAY)}), NOW)[DPH]
    assert (fence.open, fence.ended_at, fence.delete_due(NOW + 30 * DAY, HOUR)) == (False, None, False)


def test_a_malformed_agreement_opens_nothing() -> None:
    assert fences(state({"bad": {"subscriber": "x", "stream": T1, "valid_from": "yesterday"}}), NOW) == {}


class MemoryCluster:
    """Delivery topics in memory: retention, fenced flags and a record count per topic."""

    def __init__(self, topics: Mapping[str, int]) -> None:
        self.records = dict(topics)
        self.retention: dict[str, int | None] = dict.fromkeys(topics)
        self.fenced: set[str] = set()
        self.calls = 0

    def delivery_topics(self) -> Mapping[str, int | None]:
        self.calls += 1
        return dict(self.retention)

    def fenced_topics(self) -> set[str]:
        return set(self.fenced)

    def set_retention(self, topic: str, retention_ms: int) -> None:
        self.retention[topic] = retention_ms

    def fence(self, topic: str) -> None:
        self.fenced.add(topic)

    def unfence(self, topic: str) -> None:
        self.fenced.discard(topic)

    def delete_records(self, topic: str) -> int:
        held, self.records[topic] = self.records[topic], 0
        return held


def keeper(cluster: MemoryCluster, grace: dt.timedelta = DAY) -> tuple[FenceKeeper, list[dict[str, Any]]]:
    audit: list[dict[str, Any]] = []
    return FenceKeeper(cluster, lambda kind, record: audit.append({"kind": kind, **record}), grace), audit


def test_the_keeper_sets_retention_fences_on_revocation_deletes_after_the_grace_and_audits_each_step() -> None:
    cluster = MemoryCluster({DPH: 5})
    keep, audit = keeper(cluster)
    live = state({"a": agreement(NOW + 30 * DAY, 28 * DAY)})
    keep.step(live, NOW)
    assert (cluster.retention[DPH], cluster.fenced) == (28 * DAY // dt.timedelta(milliseconds=1), set())
    revoked = state({"a": agreement(NOW + 30 * DAY, 28 * DAY)}, revoked={"a": {"at": stamp(NOW)}}, offset=2)
    keep.step(revoked, NOW + dt.timedelta(seconds=1))
    assert (cluster.fenced, cluster.records[DPH]) == ({DPH}, 5)
    keep.step(revoked, NOW + DAY)
    assert cluster.records[DPH] == 0
    assert [(a["kind"], a["action"], a["topic"]) for a in audit] == [
        ("delivery-fence", "retention-set", DPH), ("delivery-fence", "read-refused", DPH),
        ("delivery-fence", "records-deleted", DPH)]
    assert audit[-1]["records"] == 5 and audit[-1]["because"] == ["a"]


def test_reinstating_restores_read_access() -> None:
    cluster = MemoryCluster({DPH: 2})
    keep, audit = keeper(cluster)
    keep.step(state({"a": agreement(NOW + DAY)}, revoked={"a": {"at": stamp(NOW)}}), NOW)
    keep.step(state({"a": agreement(NOW + DAY)}, offset=2), NOW)
    assert cluster.fenced == set() and audit[-1]["action"] == "read-restored"


def test_the_keeper_leaves_the_cluster_alone_until_the_state_changes_or_a_date_passes() -> None:
    cluster = MemoryCluster({DPH: 1})
    keep, _ = keeper(cluster, grace=HOUR)
    ends = NOW + 10 * dt.timedelta(minutes=1)
    quiet = state({"a": agreement(ends)})
    keep.step(quiet, NOW)
    keep.step(quiet, NOW + dt.timedelta(seconds=30))
    assert cluster.calls == 1
    keep.step(quiet, ends)  # the agreement's end is a date the keeper waits for
    assert (cluster.calls, cluster.fenced) == (2, {DPH})
    keep.step(quiet, ends + HOUR)  # and so is the end of the grace
    assert cluster.records[DPH] == 0


def test_a_withdrawn_grants_records_go_a_grace_after_the_keeper_first_fenced_its_topic() -> None:
    cluster = MemoryCluster({DPH: 4})
    keep, audit = keeper(cluster, grace=HOUR)
    keep.step(state({}, grants={"g": agreement(NOW + DAY)}), NOW)
    keep.step(state({}, offset=2), NOW + dt.timedelta(minutes=1))  # withdrawn: the state no longer names it
    keep.step(state({}, offset=2), NOW + dt.timedelta(minutes=30))
    assert (cluster.fenced, cluster.records[DPH]) == ({DPH}, 4)
    keep.step(state({}, offset=2), NOW + dt.timedelta(minutes=61))
    assert cluster.records[DPH] == 0 and audit[-1]["action"] == "records-deleted"


def test_the_pull_api_is_told_why_a_right_is_not_in_force() -> None:
    from broker.domain.fences import delivery_access

    live = state({"a": agreement(NOW + DAY)})
    assert delivery_access(live, DPH, NOW).open
    revoked = delivery_access(state({"a": agreement(NOW + DAY)}, revoked={"a": {"at": stamp(NOW - HOUR)}}), DPH, NOW)
    assert (revoked.open, revoked.reason) == (False, "a was revoked at 2026-12-06T11:00:00Z")
    expired = delivery_access(state({"a": agreement(NOW - HOUR)}), DPH, NOW)
    assert (expired.open, expired.reason) == (False, "a expired at 2026-12-06T11:00:00Z")
    early = delivery_access(state({"a": agreement(NOW + 2 * DAY, since=NOW + DAY)}), DPH, NOW)
    assert (early.open, early.reason) == (False, "a is not in force until 2026-12-07T12:00:00Z")
    assert delivery_access(live, ANALYST, NOW).reason == "no agreement or grant in force gives this role this stream"
