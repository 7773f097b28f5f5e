"""`accord drill verify` and the drill commands' argument errors, as a user meets them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from broker.cli import app
from broker.security.audit_keys import audit_signing_key, public_key_path
from broker.services import drill_report
from tests.unit.test_drills import sample

runner = CliRunner()


def test_verify_says_ok_for_a_signed_report_and_names_an_altered_one(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    drill_report.write(sample(), tmp_path / "drill-1", audit_signing_key(secrets))
    key = str(public_key_path(secrets))
    ok = runner.invoke(app, ["drill", "verify", str(tmp_path / "drill-1"), "--key", key, "--offline"])
    assert ok.exit_code == 0 and ok.output.startswith("ok: drill-1 (fail) signed with audit key ")
    assert ok.output.endswith("; not looked for (--offline)\n")

    page = tmp_path / "drill-1" / "report.md"
    page.write_text(page.read_text().replace("| fail |", "| pass |"))
    altered = runner.invoke(app, ["drill", "verify", str(tmp_path / "drill-1" / "report.json"), "--key", key,
                                  "--offline"])
    assert altered.exit_code == 1
    assert altered.output == ("ALTERED: report.md was altered after signing: its digest does not match the one "
                              "report.json signed\n")


def test_verify_of_nothing_and_a_bad_schedule_are_clear_errors(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    audit_signing_key(secrets)
    missing = runner.invoke(app, ["drill", "verify", str(tmp_path / "none"), "--key", str(public_key_path(secrets)),
                                  "--offline"])
    assert missing.exit_code == 2 and "no drill report at" in missing.output
    bad = runner.invoke(app, ["drill", "schedule", "--every", "weekly"])
    said = " ".join(bad.output.replace("│", " ").split())      # the usage error's box may wrap the line
    assert bad.exit_code == 2 and "'weekly' is not an ISO 8601 duration" in said
    flows = runner.invoke(app, ["drill", "run", "--flows", "T9"])
    assert flows.exit_code == 2 and "T9 unknown" in flows.output
