"""The public transparency figures, folded from the governance log's events alone: aggregate counts and durations,
never a body, a person, a purpose or a justification.

A *question* is put when a dispute is raised or appealed, and answered by its next decision (`decided` by people, or
`defaulted` by the ladder's decisive default); the time to decision is the time between the two. Percentiles are
nearest-rank (the p90 of 10 answers is the 9th fastest), so every figure is one that was actually measured.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.domain.disputes import parse_stamp
from broker.domain.drills import is_drill_body, is_drill_region

DECISIONS = ("decided", "defaulted")
QUESTIONS = ("raised", "appealed")


@dataclass(frozen=True)
class Figures:
    """What the transparency page publishes; `as_of` is the newest event's time (None: no event yet)."""

    disputes_raised: int = 0
    disputes_by_kind: Mapping[str, int] = field(default_factory=dict)
    disputes_by_outcome: Mapping[str, int] = field(default_factory=dict)   # each dispute's latest outcome, or open
    decisions: int = 0
    decisions_by_outcome: Mapping[str, int] = field(default_factory=dict)
    decisions_by_default: int = 0
    appeals: int = 0
    median_decision_s: float | None = None
    p90_decision_s: float | None = None
    emergency_declarations: int = 0
    emergency_declarations_by_level: Mapping[str, int] = field(default_factory=dict)
    emergency_lifts: int = 0
    break_glass_uses: int = 0
    as_of: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "disputes": {"raised": self.disputes_raised, "by_kind": dict(sorted(self.disputes_by_kind.items())),
                         "by_outcome": dict(sorted(self.disputes_by_outcome.items())), "appeals": self.appeals},
            "decisions": {"total": self.decisions, "by_outcome": dict(sorted(self.decisions_by_outcome.items())),
                          "by_decisive_default": self.decisions_by_default,
                          "median_time_to_decision_s": self.median_decision_s,
                          "p90_time_to_decision_s": self.p90_decision_s},
            "emergency": {"declarations": self.emergency_declarations,
                          "declarations_by_level": dict(sorted(self.emergency_declarations_by_level.items())),
                          "lifts": self.emergency_lifts},
            "break_glass": {"uses": self.break_glass_uses},
            "as_of": self.as_of,
        }

    def rows(self) -> list[tuple[str, str, str]]:
        """(section, measure, value) rows: the CSV and the HTML tables."""
        out: list[tuple[str, str, str]] = [("disputes", "raised", str(self.disputes_raised))]
        out += [("disputes", f"kind: {k}", str(v)) for k, v in sorted(self.disputes_by_kind.items())]
        out += [("disputes", f"outcome: {k}", str(v)) for k, v in sorted(self.disputes_by_outcome.items())]
        out += [("disputes", "appeals", str(self.appeals)), ("decisions", "total", str(self.decisions))]
        out += [("decisions", f"outcome: {k}", str(v)) for k, v in sorted(self.decisions_by_outcome.items())]
        out += [("decisions", "by decisive default", str(self.decisions_by_default)),
                ("decisions", "median time to decision (s)", _seconds(self.median_decision_s)),
                ("decisions", "p90 time to decision (s)", _seconds(self.p90_decision_s)),
                ("emergency", "declarations", str(self.emergency_declarations))]
        out += [("emergency", f"declared at level: {k}", str(v))
                for k, v in sorted(self.emergency_declarations_by_level.items())]
        out += [("emergency", "lifts", str(self.emergency_lifts)),
                ("break-glass", "uses", str(self.break_glass_uses))]
        return out


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def nearest_rank(values: list[float], percent: float) -> float | None:
    """The nearest-rank percentile of `values` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


def _drilled(kind: Any, data: Mapping[str, Any], actor: Any) -> bool:
    """A drill's own level (for a drill body's region) or its drill body's break-glass."""
    if kind in ("emergency-declared", "emergency-lifted"):
        return is_drill_region(data.get("scope"))
    return kind == "break-glass" and is_drill_body((actor or {}).get("body"))


def figures(events: Iterable[Mapping[str, Any]]) -> Figures:
    """The figures of the governance events, in log order (events of other kinds are ignored, and so are the
    disputes of drill bodies: a drill exercises the ladder, it is not a dispute between bodies)."""
    kinds: Counter[str] = Counter()
    latest: dict[str, str] = {}                 # dispute -> its latest outcome, "open" while a question stands
    asked: dict[str, dt.datetime] = {}          # dispute -> when its standing question was put
    outcomes: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    durations: list[float] = []
    defaults = appeals = lifts = break_glass = 0
    as_of: str | None = None
    drills: set[str] = set()
    for event in events:
        kind, ident, data = event.get("type"), event.get("dispute"), event.get("data") or {}
        if kind == "raised" and ident and is_drill_body(data.get("subscriber")):
            drills.add(str(ident))
        if ident in drills or _drilled(kind, data, event.get("actor")):
            continue
        as_of = str(event["at"]) if event.get("at") else as_of
        if kind == "raised" and ident:
            kinds[str(data.get("kind", "unknown"))] += 1
        if kind in QUESTIONS and ident:
            asked[str(ident)], latest[str(ident)] = parse_stamp(event["at"]), "open"
            appeals += kind == "appealed"
        elif kind in DECISIONS and ident:
            outcome = str(data.get("outcome", "unknown"))
            outcomes[outcome] += 1
            defaults += kind == "defaulted"
            latest[str(ident)] = outcome
            start = asked.pop(str(ident), None)
            if start is not None:
                durations.append((parse_stamp(event["at"]) - start).total_seconds())
        elif kind == "emergency-declared":
            levels[str(data.get("level", "unknown"))] += 1
        elif kind == "emergency-lifted":
            lifts += 1
        elif kind == "break-glass":
            break_glass += 1
    median = None if not durations else nearest_rank(durations, 50)
    return Figures(disputes_raised=sum(kinds.values()), disputes_by_kind=dict(kinds),
                   disputes_by_outcome=dict(Counter(latest.values())), decisions=sum(outcomes.values()),
                   decisions_by_outcome=dict(outcomes), decisions_by_default=defaults, appeals=appeals,
                   median_decision_s=median, p90_decision_s=nearest_rank(durations, 90),
                   emergency_declarations=sum(levels.values()), emergency_declarations_by_level=dict(levels),
                   emergency_lifts=lifts, break_glass_uses=break_glass, as_of=as_of)
