from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import KAFKA_VERSION, OPA_VERSION, Settings
from broker.local.kafka_server import KafkaLayout, KafkaSecrets, new_cluster_id, server_properties
from broker.local.stack import LocalStack


def test_cache_follows_xdg_and_accord_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ACCORD_HOME", raising=False)
    monkeypatch.delenv("ACCORD_STATE_DIR", raising=False)  # the integration tests' session points it elsewhere
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Settings().home == tmp_path / "xdg" / "accord"
    monkeypatch.setenv("ACCORD_HOME", str(tmp_path / "elsewhere"))
    settings = Settings()
    assert settings.kafka_libs == tmp_path / "elsewhere" / "kafka" / KAFKA_VERSION / "libs"
    assert settings.opa_binary == tmp_path / "elsewhere" / "opa" / OPA_VERSION / "bin" / "opa"
    assert settings.local_dir == tmp_path / "elsewhere" / "local"


def test_external_endpoints_come_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ACCORD_KAFKA_BOOTSTRAP", "kafka.example:9092")
    monkeypatch.setenv("ACCORD_OPA_URL", "http://opa.example:8181/")
    monkeypatch.setenv("ACCORD_REGISTRY_URL", "http://registry.example:8081")
    monkeypatch.setenv("ACCORD_API_URL", "http://api.example:8080")
    monkeypatch.setenv("ACCORD_GOVERNANCE_URL", "http://governance.example:8090/")
    monkeypatch.setenv("ACCORD_CONSOLE_URL", "https://console.example")
    endpoints = LocalStack(Settings(state_dir=tmp_path)).endpoints()
    assert endpoints is not None
    assert endpoints.env_lines() == ["ACCORD_KAFKA_BOOTSTRAP=kafka.example:9092",
                                     "ACCORD_OPA_URL=http://opa.example:8181",
                                     "ACCORD_REGISTRY_URL=http://registry.example:8081",
                                     "ACCORD_API_URL=http://api.example:8080",
                                     "ACCORD_GOVERNANCE_URL=http://governance.example:8090",
                                     "ACCORD_CONSOLE_URL=https://console.example"]


def test_server_properties_single_node_kraft_on_loopback_with_authentication(tmp_path: Path) -> None:
    text = server_properties(KafkaLayout(tmp_path), 19092, 19093, KafkaSecrets("broker-pw", "controller-pw"))
    props = dict(line.split("=", 1) for line in text.splitlines() if line)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    # no listener without authentication, and an authorizer that refuses what no ACL allows
    assert "PLAINTEXT:PLAINTEXT" not in props["listener.security.protocol.map"]
    assert props["listener.security.protocol.map"] == "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert 'user_accord.controller="controller-pw"' in props["listener.name.controller.plain.sasl.jaas.config"]
    assert props["transaction.state.log.replication.factor"] == "1"
    assert int(props["log.cleaner.dedupe.buffer.size"]) < 128 * 1024 * 1024


def test_cluster_ids_never_start_with_a_dash() -> None:
    # One id in 64 would start with '-' by chance, and the storage tool would read it as an option.
    ids = [new_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)


def test_the_audit_chain_is_signed_every_10_seconds_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCORD_AUDIT_CHECKPOINT_EVERY_S", raising=False)
    assert Settings().audit_checkpoint_every_s == 10.0
    monkeypatch.setenv("ACCORD_AUDIT_CHECKPOINT_EVERY_S", "2.5")
    assert Settings().audit_checkpoint_every_s == 2.5
    monkeypatch.setenv("ACCORD_AUDIT_CHECKPOINT_EVERY_S", "-1")
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        Settings()
