"""The audit chainer on the real Kafka: governance events end up chained and signed once each, the export verifies,
an edited export names the edited entry, a restarted chainer continues the same chain, every export ends with a
freshly signed checkpoint, and an export cut at a checkpoint fails against the anchor on the governance log."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from secrets import token_bytes
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_audit import AuditChainer, newest_anchor, read_chain
from broker.adapters.kafka_governance import KafkaGovernanceLog, ensure_governance_topics
from broker.cli import app
from broker.config import Settings
from broker.domain.audit import CHECKPOINT, EXPORT, Signer, from_json_line, new_signing_key, verify
from broker.domain.audit_records import ANCHOR
from broker.errors import ServiceError
from broker.local.stack import Endpoints
from broker.security.audit_keys import audit_signing_key, public_key_path
from tests.conftest import governance_service, kafka_env

runner = CliRunner()


class Topics:
    def __init__(self, kafka: KafkaAccess) -> None:
        run = uuid.uuid4().hex[:8]
        self.kafka, self.audit, self.governance = kafka, f"_accord.audit.test-{run}", f"_accord.governance.test-{run}"
        ensure_governance_topics(kafka, self.governance, self.audit)
        self.log = KafkaGovernanceLog(kafka, self.governance, self.audit, transactional_id=f"test-audit-chain-{run}")

    def raise_events(self, first: int, count: int) -> None:
        self.log.append([{"type": "comment", "dispute": f"d-{n:010d}", "data": {"n": n}}
                         for n in range(first, first + count)])

    def chainer(self, signer: Signer) -> AuditChainer:
        return AuditChainer(self.kafka, signer, self.audit, governance_topic=self.governance, interval=3,
                            checkpoint_every_s=3600.0)

    def anchored(self, expected: int) -> list[int]:
        """The seqs of the checkpoints anchored on the governance topic since the last call, in order, once there
        are `expected` of them: a transaction's records become readable a moment after its commit returns."""
        seqs: list[int] = []
        deadline = time.monotonic() + 15.0
        while len(seqs) < expected and time.monotonic() < deadline:
            seqs += [event["data"]["seq"] for _, event in self.log.read_new() if event["type"] == ANCHOR]
            time.sleep(0.05)
        return seqs


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


class Stepping:
    """Steps a chainer on its own thread (as the governance service does) while the test runs the CLI."""

    def __init__(self, chainer: AuditChainer) -> None:
        self._chainer, self._stop = chainer, threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-audit-chainer", daemon=True)
        self.errors: list[ServiceError] = []

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self._chainer.step()
            except ServiceError as exc:
                self.errors.append(exc)

    def __enter__(self) -> Stepping:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _cli(tmp_path: Path, kafka: KafkaAccess, *args: str) -> Any:
    return runner.invoke(app, ["audit", *args], env={**kafka_env(kafka),
                                                     "ACCORD_STATE_DIR": str(tmp_path)})


def _export(tmp_path: Path, topics: Topics, chain_topic: str, name: str, *options: str) -> Path:
    """`accord audit export` (by default without asking the chainer to sign: no chainer runs)."""
    out = tmp_path / name
    result = _cli(tmp_path, topics.kafka, "export", "--topic", chain_topic, "--out", str(out),
                  *(options or ("--no-seal",)))
    assert result.exit_code == 0, result.output
    return out


def _verify(tmp_path: Path, topics: Topics, *args: str) -> Any:
    """`accord audit verify` of the test's chain, against the anchors on the test's governance topic."""
    return _cli(tmp_path, topics.kafka, "verify", "--topic", f"{topics.audit}.chain",
                "--governance-topic", topics.governance, *args)


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
    result = _verify(tmp_path, topics, str(exported))
    assert (result.exit_code, result.output) == (0, "6 entries, 1 checkpoints, 2 after the last checkpoint\n"
                                                    f"anchor: checkpoint 3 on {topics.governance}\nok\n")

    lines = exported.read_text().splitlines()
    edited = json.loads(lines[4])
    edited["body"]["event"]["data"]["n"] = 40
    (tmp_path / "edited.jsonl").write_text("\n".join([*lines[:4], json.dumps(edited), *lines[5:]]) + "\n")
    result = _verify(tmp_path, topics, str(tmp_path / "edited.jsonl"))
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
    result = _verify(tmp_path, topics, "--require-signed-tail", str(whole))
    assert (result.exit_code, result.output) == (0, "11 entries, 3 checkpoints, 0 after the last checkpoint\n"
                                                    f"anchor: checkpoint 10 on {topics.governance}\nok\n")
    assert topics.anchored(3) == [3, 7, 10]  # the first checkpoint of each chainer, and the one it signs on stopping


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
    result = _verify(tmp_path, topics, "--require-signed-tail")  # the chain topic itself, not an export
    assert (result.exit_code, result.output) == (0, "2 entries, 1 checkpoints, 0 after the last checkpoint\n"
                                                    f"anchor: checkpoint 1 on {topics.governance}\nok\n")


def test_the_governance_service_chains_its_audit_topic_and_signs_it_when_it_stops(
        services: Endpoints, topics: Topics) -> None:
    key = new_signing_key()
    run = uuid.uuid4().hex[:8]
    service = governance_service(services, schemas_dir=Settings().schemas_dir, audit_key=key,
                                webhook_secret=token_bytes(32), tick_s=3600.0,
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
    anchor = newest_anchor(topics.kafka, service.chainer.chain_topic, service.topic)
    assert anchor is not None and anchor.seq == entries[-1].seq  # the checkpoint of the stop is anchored too
    assert verify(entries, {Signer(key).key_id: key.public_key()}, require_checkpoint_tail=True, anchor=anchor).ok


def test_the_timer_signs_what_was_chained_since_the_last_checkpoint_and_an_idle_chain_stays_quiet(
        topics: Topics, signer: Signer) -> None:
    now = [0.0]
    chainer = AuditChainer(topics.kafka, signer, topics.audit, governance_topic=topics.governance,
                           checkpoint_every_s=60.0, monotonic=lambda: now[0])
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
    assert topics.anchored(1) == [2]


def test_anchors_are_written_at_most_once_a_period_and_a_checkpoint_left_unanchored_is_anchored_when_due(
        topics: Topics, signer: Signer) -> None:
    now = [0.0]
    chainer = AuditChainer(topics.kafka, signer, topics.audit, governance_topic=topics.governance, interval=2,
                           checkpoint_every_s=60.0, monotonic=lambda: now[0])
    try:
        topics.raise_events(0, 2)
        assert _chain(chainer, 3) == 3  # 0, 1, checkpoint 2: the first anchor
        now[0] = 1.0
        topics.raise_events(2, 2)
        assert _chain(chainer, 3) == 3  # 3, 4, checkpoint 5: signed, its anchor waits for the period
        now[0] = 59.0
        assert chainer.step() == 0
        now[0] = 60.0
        assert chainer.step() == 0  # nothing new to sign, but checkpoint 5 is anchored now
        now[0] = 200.0
        assert chainer.step() == 0  # and nothing is anchored twice
        topics.raise_events(4, 1)
        assert _chain(chainer, 2) == 2  # 6 and the timer's checkpoint 7, anchored: the period has passed
        now[0] = 201.0
        topics.raise_events(5, 1)
        assert _chain(chainer, 1) == 1
        assert chainer.seal() == 1  # checkpoint 9, anchored on sealing whatever the period
        assert topics.anchored(4) == [2, 5, 7, 9]
    finally:
        chainer.close()


def test_an_export_ends_signed_and_the_same_export_cut_at_a_checkpoint_fails_verification(
        tmp_path: Path, topics: Topics, signer: Signer) -> None:
    topics.raise_events(0, 7)
    chainer = topics.chainer(signer)  # a checkpoint after every third entry, none by the timer
    try:
        assert _chain(chainer, 9) == 9  # 0 1 2 checkpoint-3 4 5 6 checkpoint-7 8
        with Stepping(chainer) as stepping:  # the chainer keeps running, as in the governance service
            exported = _export(tmp_path, topics, chainer.chain_topic, "export.jsonl", "--wait", "60",
                               "--governance-topic", topics.governance)
        assert stepping.errors == []
    finally:
        chainer.close()
    entries = [from_json_line(line, n) for n, line in enumerate(exported.read_text().splitlines(), start=1)]
    assert [(e.seq, e.kind) for e in entries[-2:]] == [(9, EXPORT), (10, CHECKPOINT)]
    assert entries[-2].body["event"]["by"] == topics.kafka.principal  # who exported is on the trail
    result = _verify(tmp_path, topics, "--require-signed-tail", str(exported))
    assert (result.exit_code, result.output) == (0, "11 entries, 3 checkpoints, 0 after the last checkpoint\n"
                                                    f"anchor: checkpoint 10 on {topics.governance}\nok\n")

    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(f"{line}\n" for line in exported.read_text().splitlines()[:8]))  # to checkpoint 7
    offline = _cli(tmp_path, topics.kafka, "verify", "--offline", "--require-signed-tail", str(cut))
    assert offline.exit_code == 0  # sound in itself: only the anchor shows what is missing
    result = _verify(tmp_path, topics, str(cut))
    assert result.exit_code == 1
    assert "problem at entry 8 (truncated)" in result.output
    assert "at least 3 entries (8 to 10) are missing from its end" in result.output
