"""The drill's dispute-default check: a dispute nobody decides ends by the ladder's decisive default within the
ladder's bound, at normal level (the refusal stands) and in a declared emergency (a provisional grant of the
template's minimised tier, enforced on the live stream).

The ladder's bounds are days (normal) and hours (emergency), so the drill runs its disputes on a compressed ladder:
each is raised with the run's `--time-scale`, which the governance service accepts only for a dispute between drill
bodies; the emergency is declared in the drill body's own region (drill_emergency.py). Real disputes' deadlines and
real bodies' levels never move. A time scale that leaves a bound longer than MAX_WAIT_S makes the check not run,
saying which time scale would let it."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.domain.disputes import parse_stamp
from broker.domain.drills import drill_region
from broker.domain.ladder import LEVELS, Actor
from broker.errors import DrillError
from broker.services.drill_emergency import declare_drill_emergency, lift_drill_emergency
from broker.services.drill_runner import Moments, Outcome, failed, not_run, passed

if TYPE_CHECKING:
    from broker.services.drill_flows import FlowDrill

MAX_WAIT_S = 120.0          # the longest scaled bound the drill waits out
# How late a default may stand after its deadline: the governance service fires deadlines on its tick (1 s by
# default), so a default stands up to a tick (plus a write) after it fell due.
GRACE_S = 5.0
POLL_S = 0.25
ENDED = ("defaulted", "enforced", "closed")


@dataclass(frozen=True)
class Ended:
    """How one undecided dispute ended (or did not), as its timeline says."""

    dispute: Mapping[str, Any]
    defaulted: Mapping[str, Any] | None     # its `defaulted` event
    waited_s: float


def bounds(catalog: Mapping[str, Any], time_scale: float) -> dict[str, float]:
    """Each level's ladder bound in seconds (every tier's deadline, one after another), divided by `time_scale`."""
    tiers = (catalog.get("ladder") or {}).get("tiers") or []
    return {level: sum(int((t.get("deadline_s") or {}).get(level, 0)) for t in tiers) / time_scale
            for level in LEVELS}


def dispute_default(drill: FlowDrill, moments: Moments, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Raise a refusal dispute as the drill body at normal level and decide nothing: the refusal must stand by
    default within the scaled bound; then the same in an emergency declared in the drill body's own region, where
    the default grants the template's minimised tier provisionally and the grant must be enforced."""
    if not drill.body:
        return not_run("no drill body (switch-on did not run)")
    catalog = drill.original or {}
    ladder = catalog.get("ladder") or {}
    if not ladder.get("tiers"):
        return not_run("the applied catalog has no escalation ladder")
    scale = drill.time_scale
    bound = bounds(catalog, scale)
    longest = max(bound["normal"], bound["emergency"])
    if longest > MAX_WAIT_S:
        needed = math.ceil(longest * scale / MAX_WAIT_S)
        return not_run(f"the ladder's normal bound is {_span(bound['normal'] * scale)}; at time scale {scale:g} "
                       f"the drill would wait {_span(longest)} for its default (at most {MAX_WAIT_S:g} s); run with "
                       f"--time-scale {needed} or more")
    template = drill._template() or {}
    fields = sorted(drill._stream_fields())
    if not fields:
        return not_run(f"the applied catalog names no fields of {template.get('stream')}'s stream")
    normal = _undecided(drill, moments, "normal", fields, bound["normal"], sleep)
    why = _ended_wrongly(normal, bound["normal"], "refused")
    if why is not None:
        return failed(why, normal.waited_s, bound["normal"] + GRACE_S)
    try:
        acting = declare_drill_emergency(
            drill.api, catalog, drill_region(drill.body), "emergency",
            f"Accord drill {drill.run}: emergency declared in drill body {drill.body}'s own region, for the drill "
            "alone.")
    except DrillError as exc:
        return failed(str(exc), _took(normal), bound["normal"] + GRACE_S)
    moments.note(drill.flow, f"emergency declared in drill body {drill.body}'s own region by {acting.declarer.body}")
    try:
        emergency, grant = _emergency(drill, moments, fields, bound["emergency"], sleep)
    finally:
        lift_drill_emergency(drill.api, acting, f"Accord drill {drill.run}: the drill's check has ended.")
        moments.note(drill.flow, f"emergency lifted in drill body {drill.body}'s own region")
    if emergency.verdict != "pass":
        return Outcome(emergency.verdict, emergency.reason, _took(normal), bound["normal"] + GRACE_S)
    return passed(f"dispute {normal.dispute['id']} (normal, nobody deciding) ended by the decisive default "
                  f"(refusal stands) {_took(normal):.3f} s after it was raised, bound {bound['normal']:g} s at time "
                  f"scale {scale:g}; {emergency.reason}{grant}", _took(normal), bound["normal"] + GRACE_S)


def _emergency(drill: FlowDrill, moments: Moments, fields: list[str], bound: float,
               sleep: Callable[[float], None]) -> tuple[Outcome, str]:
    """The emergency half: its outcome (seconds: the time to its default) and what it says of the grant."""
    minimised = _has_minimised_tier(drill)
    expected = "granted-for-period" if minimised else "refused"
    ended = _undecided(drill, moments, "emergency", fields, bound, sleep)
    why = _ended_wrongly(ended, bound, expected)
    if why is not None:
        return failed(why, ended.waited_s), ""
    said = (f"dispute {ended.dispute['id']} (emergency in the drill body's region) ended by the decisive default "
            f"({expected}) {_took(ended):.3f} s after it was raised, bound {bound:g} s")
    if not minimised:
        stream = (drill._template() or {}).get("stream")
        return passed(said, _took(ended)), (f"; no template of {stream} has a minimised tier, so the emergency "
                                            "default could grant nothing and the refusal stands")
    grant = str(((ended.defaulted or {}).get("data") or {}).get("grant", {}).get("id"))
    control = _grant_record(drill, ended.dispute, grant, sleep)
    if control is None:
        return failed(f"{said}, but its provisional grant {grant} was not written to the control topic (no "
                      "`enforced` event naming it)", _took(ended)), ""
    where = f"; provisional grant {grant} in force at control offset {control['offset']}"
    if drill.data is not None:
        applied = drill.data.enforced_at_ms(int(control["offset"]), timeout_s=60.0)
        if applied is None:
            return failed(f"{said}, but no gate worker applied its provisional grant {grant} (control offset "
                          f"{control['offset']}) within 60 s", _took(ended)), ""
        where += f", applied by the gates {max(0, applied - int(control['timestamp_ms']))} ms after it was written"
    return passed(said, _took(ended)), where


def _has_minimised_tier(drill: FlowDrill) -> bool:
    """Whether a template of the disputed stream (in the drill's catalog) has a minimised tier, which an emergency
    default grants provisionally; without one the ladder's default leaves the refusal standing."""
    templates = dict((drill.original or {}).get("templates") or {})
    if drill.twin is not None:
        templates[drill.twin.template] = drill.twin.template_entry
    stream = (drill._template() or {}).get("stream")
    return any(t.get("stream") == stream and t.get("minimised_tier") for t in templates.values())


def _undecided(drill: FlowDrill, moments: Moments, level: str, fields: list[str], bound: float,
               sleep: Callable[[float], None]) -> Ended:
    """Raise a refusal dispute as the drill body on the compressed ladder and wait, deciding nothing, until it has
    ended by default or the bound and a margin have passed."""
    template = drill._template() or {}
    role = "analyst" if drill.request.get("role") == "dph" else "dph"
    actor = drill.actor(role)
    raised = drill.api.call("POST", "/disputes", actor, {
        "kind": "refusal", "stream": template.get("stream"), "role": role, "purpose": template.get("purpose"),
        "fields": fields[:1], "time_scale": drill.time_scale,
        "justification": f"Accord drill {drill.run}: a refusal disputed at {level} level that nobody decides, to "
                         "see the ladder's decisive default stand."})
    begun = drill.monotonic()
    moments.note(drill.flow, f"dispute {raised['id']} raised at {raised.get('level')} level, left undecided")
    give_up = begun + bound + GRACE_S + max(10.0, bound / 2)
    dispute = raised
    while True:
        dispute = drill.api.call("GET", f"/disputes/{raised['id']}", actor)
        defaulted = next((e for e in dispute.get("timeline", []) if e.get("type") == "defaulted"), None)
        if defaulted is not None or drill.monotonic() >= give_up:
            break
        sleep(POLL_S)
    waited = round(drill.monotonic() - begun, 3)
    if defaulted is not None:
        moments.note(drill.flow, f"dispute {raised['id']} ended by the decisive default")
    return Ended(dispute, defaulted, waited)


def _ended_wrongly(ended: Ended, bound: float, outcome: str) -> str | None:
    """Why the dispute did not end as the ladder says (by its default, with `outcome`, within `bound` s); None if it
    did."""
    dispute, event = ended.dispute, ended.defaulted
    ident, level = dispute.get("id"), dispute.get("level")
    if event is None:
        tier = int(dispute.get("tier", 0))
        tiers = f"tier {tier + 1}"
        return (f"dispute {ident} ({level}) is still {dispute.get('state')!r} at {tiers} (deadline "
                f"{dispute.get('deadline')}) {ended.waited_s:.1f} s after it was raised, "
                f"{max(0.0, ended.waited_s - bound):.1f} s past its scaled bound of {bound:g} s: the decisive "
                "default never fired")
    data = event.get("data") or {}
    raised = parse_stamp(dispute["raised_at"])
    due = parse_stamp(data["due_at"]) if data.get("due_at") else None
    took = (parse_stamp(event["at"]) - raised).total_seconds()
    if due is None or due - raised > dt.timedelta(seconds=bound + 0.001):
        return (f"dispute {ident} ({level}) fell due to its default at {data.get('due_at')}, "
                f"{(due - raised).total_seconds() if due else float('nan'):.3f} s after it was raised, past its "
                f"scaled bound of {bound:g} s")
    if took > bound + GRACE_S:
        return (f"dispute {ident} ({level}) ended by default {took:.3f} s after it was raised, "
                f"{took - bound:.3f} s past its scaled bound of {bound:g} s")
    if data.get("outcome") != outcome:
        return (f"dispute {ident} ({level}) ended by default with outcome {data.get('outcome')!r}, not {outcome!r} "
                f"as the ladder says: {data.get('reason')}")
    return None


def _took(ended: Ended) -> float:
    """Seconds from the dispute's raising to its default standing, by the governance log's own timestamps."""
    if ended.defaulted is None:
        return ended.waited_s
    raised = parse_stamp(ended.dispute["raised_at"])
    return round((parse_stamp(ended.defaulted["at"]) - raised).total_seconds(), 3)


def _grant_record(drill: FlowDrill, dispute: Mapping[str, Any], grant: str,
                  sleep: Callable[[float], None]) -> Mapping[str, Any] | None:
    """The control record that put `grant` in force, from the dispute's `enforced` event (read again until the
    service has written it)."""
    actor = Actor(str(dispute["challenger"]["body"]), str(dispute["challenger"]["role"]),
                  str(dispute["challenger"]["person"]))
    give_up = drill.monotonic() + 30.0
    while True:
        for event in dispute.get("timeline", []):
            if event.get("type") != "enforced":
                continue
            for record in (event.get("data") or {}).get("control") or ():
                if record.get("key") == f"grant/{grant}" and record.get("offset") is not None:
                    return dict(record)
        if drill.monotonic() >= give_up:
            return None
        sleep(POLL_S)
        dispute = drill.api.call("GET", f"/disputes/{dispute['id']}", actor)


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:g} days"
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"
