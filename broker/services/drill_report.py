"""A drill report as files a board and other tools read: Markdown, HTML (one self-contained page: verdict per
check, timings against targets, the timeline as inline SVG, no external assets) and the signed JSON; and the check
of such a directory (`accord drill verify`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from broker.domain import drill_signing
from broker.domain.drills import Report, chart
from broker.errors import DrillError

JSON_FILE, MARKDOWN_FILE, HTML_FILE = "report.json", "report.md", "report.html"
CHART_WIDTH = 640.0
_TEMPLATES = Path(__file__).resolve().parent / "templates"
_ENV = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(["html"]),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def markdown(report: Report) -> str:
    """The report as Markdown: the overall verdict, per flow its first-record time and a table of its checks."""
    counts = report.counts()
    lines = [f"# Accord drill {report.run}: {report.verdict}", "",
             f"- Deployment: {report.deployment}",
             f"- Ran: {report.to_json()['started_at']} to {report.to_json()['finished_at']}"
             f" (time scale {report.time_scale:g})",
             f"- Checks: {counts['pass']} passed, {counts['fail']} failed, {counts['not-run']} not run", ""]
    for flow in report.flows:
        lines += [f"## {flow}: {report.flow_verdict(flow)}", "",
                  f"Approval to first record: {seconds(report.first_record_s.get(flow))}", "",
                  "| Check | Verdict | Seconds | Target | Reason |", "|---|---|---|---|---|"]
        lines += [f"| {c.check} | {c.verdict} | {seconds(c.seconds)} | {seconds(c.target)} | "
                  f"{_cell(c.reason)} |" for c in report.of_flow(flow)]
        lines.append("")
    if report.timeline:
        lines += ["## Timeline", ""]
        lines += [f"- {m.to_json()['at']} {m.flow}: {_cell(m.what)}" for m in report.timeline]
        lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def html(report: Report) -> str:
    bars, ticks, span = chart(report, CHART_WIDTH)
    return _ENV.get_template("drill_report.html").render(
        report=report, stamps=report.to_json(), bars=bars, ticks=ticks, span=span, width=CHART_WIDTH,
        seconds=seconds)


def write(report: Report, directory: Path, key: Ed25519PrivateKey) -> dict[str, Any]:
    """Write report.md, report.html and the signed report.json into `directory`; the signed document."""
    directory.mkdir(parents=True, exist_ok=True)
    renderings = {MARKDOWN_FILE: markdown(report).encode("utf-8"), HTML_FILE: html(report).encode("utf-8")}
    signed = drill_signing.sign(report.to_json(), renderings, key)
    for name, data in renderings.items():
        (directory / name).write_bytes(data)
    (directory / JSON_FILE).write_text(json.dumps(signed, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return signed


def verify(path: Path, keys: Mapping[str, Ed25519PublicKey]) -> tuple[Report | None, list[str]]:
    """Check a report (its directory, or its report.json): the report, and what is wrong (empty: it verifies)."""
    signed_file = path / JSON_FILE if path.is_dir() else path
    try:
        document = json.loads(signed_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DrillError(f"no drill report at {signed_file}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, [f"{signed_file.name} was altered after signing: it is no longer JSON ({exc})"]
    digests = document.get("renderings") if isinstance(document, dict) else None
    names = [str(n) for n in digests] if isinstance(digests, dict) else []
    renderings = {name: _read(signed_file.parent / Path(name).name) for name in names}
    found = drill_signing.problems(document, renderings, keys, signed_file.name)
    try:
        report = Report.from_json(document.get("report")) if isinstance(document, dict) else None
    except DrillError as exc:
        return None, [*found, f"{signed_file.name} does not hold a readable report: {exc}"]
    return report, found


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
