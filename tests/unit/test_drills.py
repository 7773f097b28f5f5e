"""Drill reports: the model and its JSON, the runner's verdicts, the Markdown and HTML renderings, and signing:
a report verifies, and every file altered after signing is named."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from broker.domain.audit import key_id, new_signing_key
from broker.domain.drill_signing import chain_problems
from broker.domain.drills import DRILL_REPORTED, CheckResult, Moment, Report, chart, parse_flows
from broker.errors import DrillError, ServiceError
from broker.services import drill_report
from broker.services.drill_runner import (
    FIRST_RECORD,
    Check,
    DrillRunner,
    Moments,
    Outcome,
    failed,
    not_run,
    passed,
)

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


class Ticking:
    """A clock that moves one second each time it is read, and a monotonic clock that does the same."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> dt.datetime:
        self.reads += 1
        return START + dt.timedelta(seconds=self.reads)

    def monotonic(self) -> float:
        self.reads += 1
        return float(self.reads)


def sample() -> Report:
    checks = (
        CheckResult("T1", "switch-on", "pass", "request r-1 made, approved and live", START, 2.5),
        CheckResult("T1", FIRST_RECORD, "fail", "no record <b>within</b> the target", START + dt.timedelta(seconds=3),
                    75.0, 60.0),
        CheckResult("T2", "switch-on", "not-run", "needs drill streams", START + dt.timedelta(seconds=80)),
    )
    return Report(run="drill-1", deployment="local", started_at=START, finished_at=START + dt.timedelta(seconds=90),
                  flows=("T1", "T2"), checks=checks,
                  timeline=(Moment(START + dt.timedelta(seconds=1), "T1", "request r-1 made"),),
                  first_record_s={"T1": 75.0, "T2": None})


# -- the model ----------------------------------------------------------------------------------------------------

def test_the_json_lists_every_check_and_each_flows_first_record_time() -> None:
    data = sample().to_json()
    assert [(c["flow"], c["check"], c["verdict"], c["seconds"], c["target"]) for c in data["checks"]] == [
        ("T1", "switch-on", "pass", 2.5, None), ("T1", FIRST_RECORD, "fail", 75.0, 60.0),
        ("T2", "switch-on", "not-run", None, None)]
    assert data["flows"] == {"T1": {"verdict": "fail", "approval_to_first_record_s": 75.0},
                             "T2": {"verdict": "incomplete", "approval_to_first_record_s": None}}
    assert (data["verdict"], data["counts"]) == ("fail", {"pass": 1, "fail": 1, "not-run": 1})
    assert Report.from_json(json.loads(json.dumps(data))) == sample()


def test_a_run_is_a_pass_only_when_every_check_passed() -> None:
    one = CheckResult("T1", "switch-on", "pass", "live", START, 1.0)
    skipped = CheckResult("T1", "revocation", "not-run", "needs drill streams", START)
    assert Report("r", "local", START, START, ("T1",), (one,)).verdict == "pass"
    assert Report("r", "local", START, START, ("T1",), (one, skipped)).verdict == "incomplete"


@pytest.mark.parametrize("bad", [{"verdict": "passed"}, {"reason": " "}, {"seconds": -1.0}])
def test_a_check_needs_a_known_verdict_a_reason_and_no_negative_time(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"flow": "T1", "check": "x", "verdict": "pass", "reason": "ok", "started_at": START,
                                 **bad}
    with pytest.raises(DrillError):
        CheckResult(**fields)  # type: ignore[arg-type]


def test_a_document_that_is_not_a_report_is_refused_by_field() -> None:
    data = sample().to_json()
    data["checks"][0]["seconds"] = "fast"
    with pytest.raises(DrillError, match=r"checks\[0\].seconds"):
        Report.from_json(data)
    with pytest.raises(DrillError, match="not a drill report"):
        Report.from_json({"run": "x"})


def test_flows_are_all_or_named_ones_in_order() -> None:
    assert parse_flows("all") == ("T1", "T2", "T3", "T4", "T5", "T6", "T7")
    assert parse_flows("t3, T1,T3") == ("T1", "T3")
    with pytest.raises(DrillError, match="T9 unknown"):
        parse_flows("T1,T9")


def test_the_chart_places_checks_on_the_runs_time_axis() -> None:
    bars, ticks, span = chart(sample(), width=900.0)
    assert span == 90.0
    assert [(b.x, b.width, b.verdict) for b in bars] == [(0.0, 25.0, "pass"), (30.0, 750.0, "fail"),
                                                         (800.0, 2.0, "not-run")]
    assert [(t.x, t.label) for t in ticks] == [(10.0, "T1: request r-1 made")]


# -- the runner ---------------------------------------------------------------------------------------------------

def test_the_runner_keeps_not_run_fails_what_raises_and_holds_times_to_targets() -> None:
    clock = Ticking()

    def raises(_: object) -> Outcome:
        raise ServiceError("governance API unreachable")

    def unreviewed(moments: Moments) -> Outcome:
        moments.note("T1", "glass broken")
        return failed("no review opened")

    checks = [
        Check("T1", "switch-on", lambda _: passed("live", 3.0)),
        Check("T1", FIRST_RECORD, lambda _: passed("first record delivered", 61.0), target=60.0),
        Check("T1", "revocation", lambda _: not_run("needs drill streams"), target=1.0),
        Check("T1", "dispute-decision", raises),
        Check("T1", "break-glass", unreviewed),
    ]
    report = DrillRunner("local", clock, monotonic=clock.monotonic).run(["T1"], checks, run_id="drill-x")
    verdicts = [(c.check, c.verdict, c.seconds) for c in report.checks]
    assert verdicts[:3] == [("switch-on", "pass", 3.0), (FIRST_RECORD, "fail", 61.0), ("revocation", "not-run", None)]
    assert "over the 60 s target" in report.checks[1].reason
    assert report.checks[3].verdict == "fail" and "governance API unreachable" in report.checks[3].reason
    assert report.checks[3].seconds is not None
    assert report.first_record_s == {"T1": 61.0}
    assert [m.what for m in report.timeline] == ["glass broken"]
    assert report.verdict == "fail"


def test_a_check_that_breaks_is_a_failure_and_the_others_still_run() -> None:
    def broken(_: object) -> Outcome:
        raise KeyError("id")

    clock = Ticking()
    report = DrillRunner("local", clock, monotonic=clock.monotonic).run(
        ["T1"], [Check("T1", "a", broken), Check("T1", "b", lambda _: passed("fine"))])
    assert [(c.check, c.verdict) for c in report.checks] == [("a", "fail"), ("b", "pass")]
    assert "the check itself broke (KeyError" in report.checks[0].reason


# -- renderings ---------------------------------------------------------------------------------------------------

def test_markdown_has_a_table_per_flow_with_timings_against_targets() -> None:
    text = drill_report.markdown(sample())
    assert text.startswith("# Accord drill drill-1: fail")
    assert "| approval-to-first-record | fail | 75.000 s | 60.000 s | no record <b>within</b> the target |" in text
    assert "Approval to first record: 75.000 s" in text and "## T2: incomplete" in text


def test_html_is_one_page_with_an_inline_svg_chart_and_no_external_assets() -> None:
    page = drill_report.html(sample())
    assert "<svg" in page and "<rect" in page and "(over target)" in page
    assert "&lt;b&gt;within&lt;/b&gt;" in page and "<b>within" not in page   # reasons are escaped
    references = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert references == []
    assert re.findall(r"https?://[^\s\"]+", page) == ["http://www.w3.org/2000/svg"]   # the SVG namespace only


# -- signing and verifying ----------------------------------------------------------------------------------------

def written(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    key = new_signing_key()
    drill_report.write(sample(), tmp_path, key)
    return tmp_path, {key_id(key.public_key()): key.public_key()}


def test_a_written_report_verifies(tmp_path: Path) -> None:
    directory, keys = written(tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == ["report.html", "report.json", "report.md"]
    report, problems = drill_report.verify(directory, keys)  # type: ignore[arg-type]
    assert problems == [] and report == sample()
    assert drill_report.verify(directory / "report.json", keys)[1] == []  # type: ignore[arg-type]


def test_a_report_altered_after_signing_is_named(tmp_path: Path) -> None:
    directory, keys = written(tmp_path)
    signed = json.loads((directory / "report.json").read_text())
    signed["report"]["checks"][1]["verdict"] = "pass"
    (directory / "report.json").write_text(json.dumps(signed))
    _, problems = drill_report.verify(directory, keys)  # type: ignore[arg-type]
    assert problems == ["report.json was altered after signing: its contents do not match the signed digest"]


def test_an_altered_or_missing_rendering_is_named(tmp_path: Path) -> None:
    directory, keys = written(tmp_path)
    page = directory / "report.html"
    page.write_text(page.read_text().replace(">fail<", ">pass<"))
    (directory / "report.md").unlink()
    _, problems = drill_report.verify(directory, keys)  # type: ignore[arg-type]
    assert problems == [
        "report.html was altered after signing: its digest does not match the one report.json signed",
        "report.md is missing: it should sit beside report.json"]


def test_a_report_signed_with_another_key_or_a_forged_signature_is_refused(tmp_path: Path) -> None:
    directory, keys = written(tmp_path)
    other = new_signing_key().public_key()
    _, problems = drill_report.verify(directory, {key_id(other): other})
    assert len(problems) == 1 and "not a trusted audit key" in problems[0]
    signed = json.loads((directory / "report.json").read_text())
    signed["signature"]["value"] = signed["signature"]["value"][::-1]
    (directory / "report.json").write_text(json.dumps(signed))
    _, problems = drill_report.verify(directory, keys)  # type: ignore[arg-type]
    assert len(problems) == 1 and "does not verify" in problems[0]


def test_a_report_json_that_is_no_longer_json_is_named_altered(tmp_path: Path) -> None:
    directory, keys = written(tmp_path)
    (directory / "report.json").write_text("{not json")
    report, problems = drill_report.verify(directory, keys)  # type: ignore[arg-type]
    assert report is None and problems[0].startswith("report.json was altered after signing")
    with pytest.raises(DrillError, match="no drill report"):
        drill_report.verify(tmp_path / "nowhere", keys)  # type: ignore[arg-type]


def test_the_audit_chain_must_record_this_very_report(tmp_path: Path) -> None:
    directory, _ = written(tmp_path)
    signed = json.loads((directory / "report.json").read_text())
    digest = signed["signature"]["digest"]

    def reported(run: str, recorded: str) -> dict[str, object]:
        return {"type": DRILL_REPORTED, "data": {"run": run, "digest": recorded}}

    assert chain_problems(signed, [{"type": "raised"}, reported("drill-1", digest)]) == []
    assert chain_problems(signed, [reported("drill-2", digest)])[0].startswith(
        "the audit chain has no record of drill report drill-1")
    [other] = chain_problems(signed, [reported("drill-1", "f" * 64)])
    assert other.startswith("report.json is not the report the audit chain recorded for drill-1 (recorded digest "
                            "ffffffffffffffff...")
