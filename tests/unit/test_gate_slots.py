"""A gate worker's transactional id is its slot's, kept across restarts, so a restarted worker fences its dead
predecessor's open transaction at once (never the process id)."""

from __future__ import annotations

import pytest

from broker.adapters.kafka_access import KafkaAccess
from broker.config import Settings
from broker.domain.gate_slots import gate_transactional_id, slot_worker_id
from broker.errors import ConfigError
from broker.runtime.gate import GateEndpoints, _start_runners, worker_identity


def test_a_slot_worker_is_its_group_and_slot() -> None:
    assert slot_worker_id("accord-gate", 0) == "accord-gate-0"
    assert gate_transactional_id("accord-gate", 2) == "accord-gate-2"


def test_a_named_worker_keeps_its_name() -> None:
    assert gate_transactional_id("accord-gate", 2, "blue") == "accord-gate-blue"


def test_a_bad_slot_or_group_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ConfigError, match="ACCORD_GATE_SLOT"):
        slot_worker_id("accord-gate", -1)
    with pytest.raises(ConfigError, match="ACCORD_GATE_GROUP"):
        slot_worker_id("accord gate", 0)


def test_a_restarted_worker_has_the_same_identity() -> None:
    settings = Settings(gate_group="accord-gate-east", gate_slot=3)
    first, again = worker_identity(settings), worker_identity(settings)
    assert first == again == ("accord-gate-east-3", "accord-gate-east-3")
    assert worker_identity(settings, "blue") == ("blue", "accord-gate-blue")
    assert worker_identity(Settings(gate_worker_id="green")) == ("green", "accord-gate-green")


def test_several_workers_in_one_process_cannot_share_one_name() -> None:
    endpoints = GateEndpoints(KafkaAccess("127.0.0.1:1"), "http://127.0.0.1:1", "http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="names one worker only"):
        _start_runners(endpoints, Settings(gate_worker_id="blue"), None, 2)
    with pytest.raises(ConfigError, match="at least 1"):
        _start_runners(endpoints, Settings(), None, 0)
