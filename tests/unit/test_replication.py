"""Topics for a cluster: three copies and two in sync from three brokers on, one copy on a single node, and every
producer Accord makes waits for all in-sync replicas (acks=all)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from broker.domain.replication import Durability, durability
from broker.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("brokers", "expected"), [
    (1, Durability(1, 1)), (2, Durability(2, 1)), (3, Durability(3, 2)), (5, Durability(3, 2)),
])
def test_a_topic_is_replicated_as_the_cluster_allows(brokers: int, expected: Durability) -> None:
    assert durability(brokers) == expected


def test_on_three_brokers_a_write_needs_two_copies() -> None:
    assert durability(3).topic_configs() == {"min.insync.replicas": "2"}
    assert durability(1).topic_configs() == {"min.insync.replicas": "1"}


def test_a_cluster_without_brokers_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least one broker"):
        durability(0)


def _producer_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in sorted([*(ROOT / "broker").rglob("*.py"), *(ROOT / "connectors").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                    "KafkaProducer", "Producer"):
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return calls


def _acks_all(call: ast.Call) -> bool:
    """kafka-python's `KafkaProducer(acks="all")`, or confluent-kafka's `Producer({"acks": "all", ...})`."""
    if any(k.arg == "acks" and isinstance(k.value, ast.Constant) and k.value.value == "all" for k in call.keywords):
        return True
    config = call.args[0] if call.args else None
    return isinstance(config, ast.Dict) and any(
        isinstance(key, ast.Constant) and key.value == "acks" and isinstance(value, ast.Constant)
        and value.value == "all" for key, value in zip(config.keys, config.values, strict=True))


def test_every_producer_waits_for_all_in_sync_replicas() -> None:
    calls = _producer_calls()
    assert len(calls) >= 5, "the scan no longer finds Accord's producers"
    lax = [where for where, call in calls if not _acks_all(call)]
    assert lax == [], f"producers without acks='all': {lax}"
