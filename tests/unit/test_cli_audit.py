"""`accord audit verify` on exported files, offline: counts and `ok` for a clean trail, the first bad entry
otherwise (checking against the governance log's anchors needs Kafka: tests/integration/test_audit_chain.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.cli import app
from broker.domain.audit import Chain, Signer, new_signing_key, to_json_line
from broker.security.audit_keys import audit_signing_key, public_key_path

AT = "2026-01-01T00:00:00.000000Z"
runner = CliRunner()


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer(audit_signing_key(tmp_path / "secrets"))


def _export(path: Path, signer: Signer, entries: int, seal: bool = True) -> list[str]:
    chain = Chain(signer, interval=3)
    written = [e for n in range(entries) for e in chain.append("governance-event", AT, {"event": {"n": n}})]
    last = chain.checkpoint(AT) if seal else None
    lines = [to_json_line(e) for e in [*written, *([last] if last else [])]]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return lines


def _verify(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", "verify", *args, "--offline",
                                 "--key", str(public_key_path(tmp_path / "secrets"))])
    return result.exit_code, result.output


def test_a_clean_trail_is_ok_with_its_counts(tmp_path: Path, signer: Signer) -> None:
    _export(tmp_path / "trail.jsonl", signer, 5)
    code, output = _verify(tmp_path, str(tmp_path / "trail.jsonl"), "--require-signed-tail")
    assert (code, output) == (0, "7 entries, 2 checkpoints, 0 after the last checkpoint\n"
                                 "anchor: not checked (--offline)\nok\n")


def test_one_changed_body_is_named_by_its_seq(tmp_path: Path, signer: Signer) -> None:
    lines = _export(tmp_path / "trail.jsonl", signer, 5)
    changed = json.loads(lines[4])
    changed["body"]["event"]["n"] = 99
    lines[4] = json.dumps(changed)
    (tmp_path / "tampered.jsonl").write_text("\n".join(lines) + "\n")
    code, output = _verify(tmp_path, str(tmp_path / "tampered.jsonl"))
    assert code == 1
    assert "problem at entry 4 (tampered): entry 4 was altered" in output


def test_an_unsigned_tail_fails_only_when_a_signed_tail_is_required(tmp_path: Path, signer: Signer) -> None:
    _export(tmp_path / "trail.jsonl", signer, 4, seal=False)
    assert _verify(tmp_path, str(tmp_path / "trail.jsonl"))[0] == 0
    code, output = _verify(tmp_path, str(tmp_path / "trail.jsonl"), "--require-signed-tail")
    assert code == 1
    assert "problem at entry 4 (unsigned-tail)" in output


def test_a_trail_signed_by_another_key_is_not_trusted(tmp_path: Path, signer: Signer) -> None:
    _export(tmp_path / "trail.jsonl", Signer(new_signing_key()), 3)
    code, output = _verify(tmp_path, str(tmp_path / "trail.jsonl"))
    assert code == 1
    assert "problem at entry 3 (unknown-key)" in output


def test_a_line_that_is_not_an_entry_is_named(tmp_path: Path, signer: Signer) -> None:
    lines = _export(tmp_path / "trail.jsonl", signer, 2)
    (tmp_path / "broken.jsonl").write_text(lines[0] + "\n{not json\n")
    code, output = _verify(tmp_path, str(tmp_path / "broken.jsonl"))
    assert code == 1
    assert "problem: audit line 2: not JSON" in output


def test_the_key_defaults_to_the_secrets_directory(tmp_path: Path, signer: Signer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCORD_STATE_DIR", str(tmp_path))
    _export(tmp_path / "trail.jsonl", signer, 3)
    result = runner.invoke(app, ["audit", "verify", str(tmp_path / "trail.jsonl"), "--offline"])
    assert (result.exit_code, result.output.splitlines()[-1]) == (0, "ok")


def test_offline_verification_needs_a_file(tmp_path: Path, signer: Signer) -> None:
    code, output = _verify(tmp_path)
    assert code == 2
    assert "--offline needs an exported FILE" in output
