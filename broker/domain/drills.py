"""Drill reports: what one run of `accord drill` checked on a deployment, each check's verdict and timing against its
target, per flow the time from approval to the first record delivered, and a timeline of what happened.

Pure: times arrive as timezone-aware datetimes; the files, the signing key and the audit record belong to the
services (services/drill_report.py). Signing is in domain/drill_signing.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from broker.errors import DrillError

FORMAT = "accord-drill-report/1"
# Drill bodies' ids start with this, so their disputes stay out of the public transparency figures; the catalog
# refuses real bodies named so.
DRILL_BODY_PREFIX = "drill-"
# The governance-log event (and so audit entry) that records a signed report's digest; governance state ignores it.
DRILL_REPORTED = "drill-reported"
Verdict = Literal["pass", "fail", "not-run"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "not-run")
# The targets: a flow switched on delivers within a minute of its approval, and a change of policy (a
# revocation, a decision) is enforced on the live stream within a second.
APPROVAL_TO_FIRST_RECORD_TARGET_S = 60.0
ENFORCEMENT_TARGET_S = 1.0
# The template flows of docs/domain.md, by the name a drill is asked for with, and the catalog template each is.
FLOWS: Mapping[str, str] = {
    "T1": "t1-positive-tests", "T2": "t2-cases-to-trace", "T3": "t3-shielded-patients",
    "T4": "t4-care-home-capacity", "T5": "t5-hospital-sitrep", "T6": "t6-vaccination-uptake",
    "T7": "t7-isolation-payments",
}


def drill_stream(stream: str, run: str) -> str:
    """The drill twin of template stream `stream` (`<publisher>.<name>`) for drill `run`: the publisher's own
    stream (so its ingest ACLs and the API's ownership rule apply unchanged), named as a drill's."""
    owner, _, name = stream.partition(".")
    if not owner or not name:
        raise DrillError(f"stream {stream!r} is not `<publisher>.<name>`, so it has no drill twin")
    return f"{owner}.{DRILL_BODY_PREFIX}{run}-{name}"


def drill_template(template: str, run: str) -> str:
    """The id of the drill's copy of catalog template `template`, which names the drill stream."""
    return f"{DRILL_BODY_PREFIX}{run}-{template}"


def is_drill_body(body: object) -> bool:
    return isinstance(body, str) and body.startswith(DRILL_BODY_PREFIX)


def drill_region(body: str) -> str:
    """The region a drill body alone is in, named as the body: an emergency declared for it (break-glass needs one)
    changes no level but that drill body's. Real bodies' regions are E12 codes from the geography, never so named."""
    if not is_drill_body(body):
        raise DrillError(f"{body!r} is not a drill body, so it has no drill region")
    return body


def is_drill_region(scope: object) -> bool:
    """An emergency scope that is a drill body's own region (see drill_region), never a real E12 region."""
    return is_drill_body(scope)


def parse_flows(text: str) -> tuple[str, ...]:
    """`all`, or flow names separated by commas (`T1,T3`, any case), in T1..T7 order without repeats."""
    if text.strip().lower() == "all":
        return tuple(FLOWS)
    asked = [part.strip().upper() for part in text.split(",") if part.strip()]
    unknown = [name for name in asked if name not in FLOWS]
    if unknown or not asked:
        raise DrillError(f"--flows {text!r}: expected `all` or some of {', '.join(FLOWS)} separated by commas"
                         + (f" ({', '.join(unknown)} unknown)" if unknown else ""))
    return tuple(name for name in FLOWS if name in asked)


def _stamp(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        raise DrillError(f"drill times must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _moment(value: Any, where: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise DrillError(f"{where}: {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise DrillError(f"{where}: {value!r} has no time zone")
    return parsed


@dataclass(frozen=True)
class CheckResult:
    """One check of one flow. `seconds` is what the check measured (None when nothing was timed), `target` the bound
    it is held to (None: no timing target), `reason` why it passed, failed or did not run."""

    flow: str
    check: str
    verdict: Verdict
    reason: str
    started_at: dt.datetime
    seconds: float | None = None
    target: float | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise DrillError(f"check {self.flow}/{self.check}: verdict {self.verdict!r} is not one of "
                             f"{', '.join(VERDICTS)}")
        if not self.reason.strip():
            raise DrillError(f"check {self.flow}/{self.check}: a verdict needs its reason")
        if self.seconds is not None and self.seconds < 0:
            raise DrillError(f"check {self.flow}/{self.check}: negative seconds {self.seconds}")

    @property
    def within_target(self) -> bool | None:
        """Whether the measured time met the target; None when either is missing."""
        if self.seconds is None or self.target is None:
            return None
        return self.seconds <= self.target

    def to_json(self) -> dict[str, Any]:
        return {"flow": self.flow, "check": self.check, "verdict": self.verdict, "seconds": self.seconds,
                "target": self.target, "reason": self.reason, "started_at": _stamp(self.started_at)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> CheckResult:
        if not isinstance(data, dict):
            raise DrillError(f"{where}: a check must be an object")
        try:
            return cls(flow=str(data["flow"]), check=str(data["check"]), verdict=cast(Verdict, data["verdict"]),
                       reason=str(data["reason"]), started_at=_moment(data["started_at"], f"{where}.started_at"),
                       seconds=_number(data.get("seconds"), f"{where}.seconds"),
                       target=_number(data.get("target"), f"{where}.target"))
        except KeyError as exc:
            raise DrillError(f"{where}: no {exc.args[0]!r}") from None


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DrillError(f"{where}: {value!r} is not a number")
    return float(value)


@dataclass(frozen=True)
class Moment:
    """Something that happened during the run (a request made, an approval, a first record), for the timeline."""

    at: dt.datetime
    flow: str
    what: str

    def to_json(self) -> dict[str, Any]:
        return {"at": _stamp(self.at), "flow": self.flow, "what": self.what}


@dataclass(frozen=True)
class Report:
    """One run: where it ran, when, at what time scale, its checks in the order they ran, and its timeline."""

    run: str
    deployment: str
    started_at: dt.datetime
    finished_at: dt.datetime
    flows: tuple[str, ...]
    checks: tuple[CheckResult, ...]
    timeline: tuple[Moment, ...] = ()
    time_scale: float = 1.0
    first_record_s: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """`fail` when any check failed, `pass` when every check passed, otherwise `incomplete` (some not run)."""
        verdicts = {c.verdict for c in self.checks}
        if "fail" in verdicts:
            return "fail"
        return "pass" if verdicts == {"pass"} else "incomplete"

    def counts(self) -> dict[str, int]:
        return {v: sum(1 for c in self.checks if c.verdict == v) for v in VERDICTS}

    def of_flow(self, flow: str) -> list[CheckResult]:
        return [c for c in self.checks if c.flow == flow]

    def flow_verdict(self, flow: str) -> str:
        verdicts = {c.verdict for c in self.of_flow(flow)}
        if "fail" in verdicts:
            return "fail"
        return "pass" if verdicts == {"pass"} else "incomplete"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "run": self.run, "deployment": self.deployment,
            "started_at": _stamp(self.started_at), "finished_at": _stamp(self.finished_at),
            "time_scale": self.time_scale, "verdict": self.verdict, "counts": self.counts(),
            "flows": {flow: {"verdict": self.flow_verdict(flow),
                             "approval_to_first_record_s": self.first_record_s.get(flow)} for flow in self.flows},
            "checks": [c.to_json() for c in self.checks],
            "timeline": [m.to_json() for m in self.timeline],
        }

    @classmethod
    def from_json(cls, data: Any) -> Report:
        """The report a JSON document describes; DrillError naming the field that is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DrillError(f"not a drill report: expected an object with format {FORMAT!r}")
        try:
            flows = data["flows"]
            if not isinstance(flows, dict):
                raise DrillError("flows: expected an object of flows")
            checks = tuple(CheckResult.from_json(c, f"checks[{i}]") for i, c in enumerate(_list(data["checks"])))
            timeline = tuple(Moment(_moment(m["at"], f"timeline[{i}].at"), str(m["flow"]), str(m["what"]))
                             for i, m in enumerate(_list(data["timeline"])))
            return cls(run=str(data["run"]), deployment=str(data["deployment"]),
                       started_at=_moment(data["started_at"], "started_at"),
                       finished_at=_moment(data["finished_at"], "finished_at"),
                       flows=tuple(flows), checks=checks, timeline=timeline,
                       time_scale=_number(data["time_scale"], "time_scale") or 1.0,
                       first_record_s={flow: _number((entry or {}).get("approval_to_first_record_s"),
                                                     f"flows.{flow}") for flow, entry in flows.items()})
        except (KeyError, TypeError) as exc:
            raise DrillError(f"the drill report has no valid {exc.args[0]!r}") from None


def _list(value: Any) -> Sequence[Any]:
    if not isinstance(value, list):
        raise DrillError(f"expected a list, got {type(value).__name__}")
    return value


# -- the timeline chart -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bar:
    """One check drawn on the chart: its row, where it starts and how long it ran, in chart units (0..width)."""

    row: int
    x: float
    width: float
    label: str
    verdict: Verdict


@dataclass(frozen=True)
class Tick:
    """One moment on the chart's axis."""

    x: float
    label: str


def chart(report: Report, width: float = 600.0) -> tuple[list[Bar], list[Tick], float]:
    """The checks as bars on a time axis from the run's start to its end (`width` units), the moments as ticks, and
    the run's length in seconds. A check that took no measurable time still gets a sliver, so it shows."""
    span = max((report.finished_at - report.started_at).total_seconds(), 1e-3)

    def x_of(moment: dt.datetime) -> float:
        offset = (moment - report.started_at).total_seconds()
        return round(min(max(offset / span, 0.0), 1.0) * width, 1)

    bars = []
    for row, check in enumerate(report.checks):
        start = x_of(check.started_at)
        end = x_of(check.started_at + dt.timedelta(seconds=check.seconds or 0.0))
        bars.append(Bar(row, start, max(end - start, 2.0), f"{check.flow} {check.check}", check.verdict))
    ticks = [Tick(x_of(m.at), f"{m.flow}: {m.what}") for m in report.timeline]
    return bars, ticks, span
