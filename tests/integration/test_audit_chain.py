"""The audit chainer on the real Kafka: governance events end up chained and signed once each, the export verifies,
an edited export names the edited entry, and a restarted chainer continues the same chain."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_audit import AuditChainer, read_chain
from broker.adapters.kafka_governance import KafkaGovernanceLog, ensure_governance_topics
from broker.cli import app
from broker.config import Settings
from broker.domain.audit import Signer, from_json_line, new_signing_key, verify
from broker.errors import ServiceError
from broker.local.stack import Endpoints
from broker.runtime.governance import GovernanceService
from broker.security.audit_keys import audit_signing_key, public_key_path
from tests.conftest import kafka_env

runner = CliRunner()


class Topics:
    def __init__(self, kafka: KafkaAccess) -> None:
        run = uuid.uuid4().hex[:8]
        self.kafka, self.audit = kafka, f"_accord.audit.test-{run}"
        ensure_governance_topics(kafka, f"_accord.governance.test-{run}", self.audit)
        self.log = KafkaGovernanceLog(kafka, f"_accord.governance.test-{run}", self.audit,
                                      transactional_id=f"test-audit-chain-{run}")

    def raise_events(self, first: int, count: int) -> None:
        self.log.append([{"type": "comment", "dispute": f"d-{n:010d}", "data": {"n": n}}
                         for n in range(first, first + count)])

    def chainer(self, signer: Signer) -> AuditChainer:
        return AuditChainer(self.kafka, signer, self.audit, interval=3, checkpoint_every_s=3600.0)


@pytest.fixture
def topics(services: Endpoints) -> Iterator[Topics]:
    made = Topics(services.kafka)
    yield made
    made.log.close()


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer(audit_signing_key(tmp_path / "secrets"))


def _chain(chainer: AuditChainer, expected: int, timeout_s: float = 15.0) -> int:
    """Step until `expected` entries were written: a transaction's records become readable (read_committed) a
    moment after its commit returns, once the broker has written the commit markers."""
    written, deadline = 0, time.monotonic() + timeout_s
    while written < expected and time.monotonic() < deadline:
        written += chainer.step()
        time.sleep(0.05)
    return written


def _cli(tmp_path: Path, kafka: KafkaAccess, *args: str) -> Any:
    return runner.invoke(app, ["audit", *args], env={**kafka_env(kafka),
                                                     "ACCORD_STATE_DIR": str(tmp_path)})


def _export(tmp_path: Path, topics: Topics, chain_topic: str, name: str) -> Path:
    out = tmp_path / name
    result = _cli(tmp_path, topics.kafka, "export", "--topic", chain_topic, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def _events(path: Path) -> list[int]:
    entries = [from_json_line(line, n) for n, line in enumerate(path.read_text().splitlines(), start=1)]
    return [e.body["event"]["data"]["n"] for e in entries if e.kind == "governance-event"]


def test_events_are_chained_once_exported_verified_and_continued_after_a_restart(
        tmp_path: Path, topics: Topics, signer: Signer) -> None:
    topics.raise_events(0, 5)
    first = topics.chainer(signer)
    try:
        assert _chain(first, 6) == 6  # five events and the checkpoint after the third
        assert first.step() == 0
    finally:
        first.close()
    exported = _export(tmp_path, topics, first.chain_topic, "first.jsonl")
    assert _events(exported) == [0, 1, 2, 3, 4]
    result = _cli(tmp_path, topics.kafka, "verify", str(exported))
    assert (result.exit_code, result.output) == (0, "6 entries, 1 checkpoints, 2 after the last checkpoint\nok\n")

    lines = exported.read_text().splitlines()
    edited = json.loads(lines[4])
    edited["body"]["event"]["data"]["n"] = 40
    (tmp_path / "edited.jsonl").write_text("\n".join([*lines[:4], json.dumps(edited), *lines[5:]]) + "\n")
    result = _cli(tmp_path, topics.kafka, "verify", str(tmp_path / "edited.jsonl"))
    assert result.exit_code == 1
    assert "problem at entry 4 (tampered)" in result.output

    topics.raise_events(5, 3)
    second = topics.chainer(signer)
    try:
        assert second.next_seq == 6
        assert _chain(second, 4) == 4  # the count towards a checkpoint survived: 6, checkpoint, 8, 9
        assert second.seal() == 1
    finally:
        second.close()
    whole = _export(tmp_path, topics, second.chain_topic, "whole.jsonl")
    assert _events(whole) == list(range(8))
    result = _cli(tmp_path, topics.kafka, "verify", "--require-signed-tail", str(whole))
    assert (result.exit_code, result.output) == (0, "11 entries, 3 checkpoints, 0 after the last checkpoint\nok\n")


def test_a_second_chainer_fences_the_first_and_nothing_is_chained_twice(
        topics: Topics, signer: Signer) -> None:
    topics.raise_events(0, 2)
    old = topics.chainer(signer)
    new = topics.chainer(signer)
    try:
        assert _chain(new, 2) == 2
        with pytest.raises(ServiceError, match="none were written"):
            old.step()  # a fenced chainer that missed the restart tries to chain the same records again
    finally:
        old.close()
        new.close()
    entries = [from_json_line(line, n) for n, line in enumerate(read_chain(topics.kafka, new.chain_topic), 1)]
    assert [e.seq for e in entries] == [0, 1]
    assert verify(entries, {signer.key_id: signer.public_key}).ok


def test_the_key_in_the_secrets_directory_verifies_the_topic_directly(
        tmp_path: Path, topics: Topics, signer: Signer) -> None:
    topics.raise_events(0, 1)
    chainer = topics.chainer(signer)
    try:
        _chain(chainer, 1)
        chainer.seal()
    finally:
        chainer.close()
    assert public_key_path(tmp_path / "secrets").exists()
    result = _cli(tmp_path, topics.kafka, "verify", "--topic", chainer.chain_topic, "--require-signed-tail")
    assert (result.exit_code, result.output) == (0, "2 entries, 1 checkpoints, 0 after the last checkpoint\nok\n")


def test_the_governance_service_chains_its_audit_topic_and_signs_it_when_it_stops(
        services: Endpoints, topics: Topics) -> None:
    key = new_signing_key()
    run = uuid.uuid4().hex[:8]
    service = GovernanceService(services.kafka, schemas_dir=Settings().schemas_dir, audit_key=key, tick_s=3600.0,
                                transactional_id=f"test-audit-governance-{run}",
                                topic=f"_accord.governance.test-{run}", audit_topic=topics.audit).start()
    try:
        topics.raise_events(0, 2)
        # The service's thread chains within about a second; stopping only signs what it chained.
        deadline = time.monotonic() + 15.0
        while len(list(read_chain(topics.kafka, service.chainer.chain_topic))) < 2:
            assert time.monotonic() < deadline, "the governance service did not chain its audit topic"
            time.sleep(0.2)
    finally:
        service.stop()
    lines = list(read_chain(topics.kafka, service.chainer.chain_topic))
    entries = [from_json_line(line, n) for n, line in enumerate(lines, start=1)]
    # The service may add events of its own (it tells councils of rows quarantined by earlier tests).
    kinds = [e.kind for e in entries]
    assert kinds[-1] == "checkpoint" and kinds.count("governance-event") >= 2
    assert verify(entries, {Signer(key).key_id: key.public_key()}, require_checkpoint_tail=True).ok


def test_the_timer_signs_what_was_chained_since_the_last_checkpoint_and_an_idle_chain_stays_quiet(
        topics: Topics, signer: Signer) -> None:
    now = [0.0]
    chainer = AuditChainer(topics.kafka, signer, topics.audit, checkpoint_every_s=60.0,
                           monotonic=lambda: now[0])
    try:
        topics.raise_events(0, 2)
        assert _chain(chainer, 2) == 2
        now[0] = 61.0
        assert chainer.step() == 1
        now[0] = 200.0
        assert chainer.step() == 0
    finally:
        chainer.close()
    kinds = [json.loads(line)["kind"] for line in read_chain(topics.kafka, chainer.chain_topic)]
    assert kinds == ["governance-event", "governance-event", "checkpoint"]
