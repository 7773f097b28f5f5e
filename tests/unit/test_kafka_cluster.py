"""A local cluster node's configuration and the stack's choice of how many brokers it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import Settings
from broker.errors import ConfigError
from broker.local import kafka_cluster
from broker.local.kafka_server import KafkaLayout, KafkaSecrets, Quorum, server_properties
from broker.local.stack import LocalStack


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_a_node_of_three_votes_with_the_others_and_replicates_kafkas_own_topics_three_times(tmp_path: Path) -> None:
    quorum = Quorum(2, {1: 19093, 2: 19095, 3: 19097})
    props = _props(server_properties(KafkaLayout(tmp_path), 19094, 19095, KafkaSecrets("b", "c"), quorum))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"
    for name in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                 "share.coordinator.state.topic.replication.factor", "default.replication.factor"):
        assert props[name] == "3", name
    for name in ("transaction.state.log.min.isr", "share.coordinator.state.topic.min.isr", "min.insync.replicas"):
        assert props[name] == "2", name


def test_a_single_node_keeps_one_copy_and_no_cluster_defaults(tmp_path: Path) -> None:
    props = _props(server_properties(KafkaLayout(tmp_path), 19092, 19093, KafkaSecrets("b", "c")))
    assert props["node.id"] == "1"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert "min.insync.replicas" not in props and "default.replication.factor" not in props


def test_the_stack_runs_as_many_brokers_as_its_kafka_was_made_with(tmp_path: Path) -> None:
    assert LocalStack(Settings(state_dir=tmp_path)).kafka_brokers() == 1
    asked = LocalStack(Settings(state_dir=tmp_path, kafka_brokers=3))
    assert asked.kafka_brokers(check=True) == 3
    asked.kafka_cluster.create(3)
    # Later runs without --brokers keep the cluster; asking for another size is refused with what to do.
    assert LocalStack(Settings(state_dir=tmp_path)).kafka_brokers(check=True) == 3
    with pytest.raises(ConfigError, match=r"has 3 broker.*accord local down --wipe"):
        LocalStack(Settings(state_dir=tmp_path, kafka_brokers=1)).kafka_brokers(check=True)


def test_kept_ports_are_read_back_per_node_and_fresh_ones_are_all_different() -> None:
    ports = kafka_cluster.fresh_ports([1, 2, 3])
    assert len({p for node in ports.values() for p in (node.client, node.controller)}) == 6
    read = kafka_cluster.parse_ports(kafka_cluster.bootstrap_of(ports), kafka_cluster.controllers_of(ports), [1, 2, 3])
    assert read == ports
    assert kafka_cluster.parse_ports("127.0.0.1:1", "127.0.0.1:2", [1, 2, 3]) is None
