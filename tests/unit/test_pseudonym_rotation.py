"""Pseudonym keys that rotate: versioned derivation, the version in force at a time, and a gate that changes a
subscriber's pseudonyms only once an announced rotation takes effect, saying which key made each delivery."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.domain import control
from broker.domain.pseudonyms import Pseudonymiser, key_in_force, subscriber_key
from broker.domain.topics import delivery_topic
from broker.errors import PolicyEngineError
from tests.unit.gate_fakes import START, T1, FakeClock, agreement, catalog_document, keep, make_gate, rotated_master

SECRET = b"deployment pseudonym secret, 32b"
LEICESTER = "leicester-city-council"
HOUR = dt.timedelta(hours=1)


def test_each_version_derives_its_own_key_and_version_1_is_the_key_pseudonyms_always_had() -> None:
    assert subscriber_key(SECRET, LEICESTER, 1) == subscriber_key(SECRET, LEICESTER)
    assert subscriber_key(SECRET, LEICESTER, 2) != subscriber_key(SECRET, LEICESTER, 1)
    assert subscriber_key(SECRET, LEICESTER, 2) != subscriber_key(SECRET, "nottingham-city-council", 2)
    with pytest.raises(ValueError, match="start at 1"):
        subscriber_key(SECRET, LEICESTER, 0)


def _rotation(version: int, at: dt.datetime, previous: int = 1) -> dict[str, Any]:
    return {"version": version, "previous": previous, "from": at.strftime("%Y-%m-%dT%H:%M:%SZ")}


def test_the_version_in_force_changes_at_the_announced_time_and_a_subscribers_own_rotation_wins() -> None:
    rotations = {"*": _rotation(2, START + HOUR), LEICESTER: _rotation(3, START + 2 * HOUR, previous=2)}
    assert key_in_force({}, LEICESTER, START) == (1, None)
    assert key_in_force(rotations, "nottingham-city-council", START) == (1, START + HOUR)
    assert key_in_force(rotations, "nottingham-city-council", START + HOUR) == (2, None)
    assert key_in_force(rotations, LEICESTER, START + HOUR) == (2, START + 2 * HOUR)
    assert key_in_force(rotations, LEICESTER, START + 2 * HOUR) == (3, None)


def test_the_gate_changes_pseudonyms_only_once_the_announced_rotation_takes_effect() -> None:
    linkage = {"name": "linkage", "roles": ["dph"], "other_fields": "drop",
               "fields": {"lsoa": keep(), "nhs_number": {"transform": "pseudonymise", "method": None,
                                                         "as": None, "params": {}}}}
    document = catalog_document(**{"t1-leicester": agreement(LEICESTER, "E06000016", linkage)})
    clock = FakeClock(START)
    h = make_gate(document, clock, replan_every_s=86_400)  # only the rotation's time can make it re-plan
    h.gate.start()
    topic = delivery_topic(LEICESTER, "dph", T1)
    person = {"nhs_number": "9434765919"}

    h.stage.queue(h.record(0, **person))
    h.gate.step()
    h.control.append(f"pseudonym-key/{LEICESTER}", {"kind": "pseudonym-key", **_rotation(2, START + HOUR)})
    h.stage.queue(h.record(1, **person))
    h.gate.step()
    clock.now = START + HOUR
    h.stage.queue(h.record(2, **person))
    h.gate.step()

    sent = h.delivered(topic)
    values = [(h.decode(s) or {})["nhs_number"] for s in sent]
    assert [s.headers["accord.pseudonym-key"] for s in sent] == [b"v1", b"v1", b"v2"]
    assert values[0] == values[1] != values[2], "announced, but not yet in force: the same pseudonym"
    v2 = Pseudonymiser(subscriber_key(rotated_master(2), LEICESTER, 2), T1)
    assert values[2] == v2("nhs_number", "9434765919")


def test_a_rotation_without_a_version_or_time_is_refused() -> None:
    with pytest.raises(PolicyEngineError, match="needs a version and a time"):
        control.apply(control.PolicyState(), 3, f"pseudonym-key/{LEICESTER}", {"version": "2"})
