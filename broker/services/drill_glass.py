"""A flow drill's break-glass check: with an emergency declared for the drill body's own region alone, the drill
body's DPH (the ladder's break-glass role) takes the template's access to the drill stream at once; the gates apply
the grant, and a record published after it reaches the drill body as the grant gives it. Then the publisher's
reviewer (the review dispute's first tier) ends the access in review; the gates apply that, and nothing published
after it is delivered. The emergency is lifted again whatever happened."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.domain.control import GRANT_PREFIX
from broker.domain.drills import drill_region
from broker.domain.ladder import Actor
from broker.domain.topics import delivery_topic
from broker.errors import AccordError
from broker.services.drill_emergency import declare_drill_emergency, lift_drill_emergency
from broker.services.drill_records import BATCH, GATE_WAIT_S, POLL_S, UNMADE
from broker.services.drill_runner import Moments, Outcome, failed, not_run, passed
from broker.services.drill_streams import Row, expected_view, granted, source_of, view_problems

if TYPE_CHECKING:
    from broker.services.drill_flows import FlowDrill

WAIT_S = 15.0     # for a control record to be written, applied by a gate, or an enforced event to be recorded


@dataclass(frozen=True)
class Glass:
    """The break-glass the ladder allows on a template: the role taking it, the level it needs, the tier it takes."""

    role: str
    level: str
    tier: Mapping[str, Any]


def glass_for(catalog: Mapping[str, Any], template: Mapping[str, Any], template_id: str) -> Glass | str:
    """The break-glass the catalog's ladder allows on `template`; why there is none."""
    glass = (catalog.get("ladder") or {}).get("break_glass") or {}
    roles, levels = list(glass.get("roles") or ()), list(glass.get("levels") or ())
    if not roles or not levels:
        return "the ladder allows no break-glass (its break_glass names no role or no level)"
    for tier in template.get("tiers") or ():
        held = [role for role in roles if role in (tier.get("roles") or ())]
        if held:
            return Glass(held[0], levels[0], tier)
    return (f"template {template_id} has no tier for the ladder's break-glass role{'s' if len(roles) > 1 else ''} "
            f"({', '.join(roles)}): break-glass takes a template's access, never more, so there is none to take")


def break_glass(drill: FlowDrill, moments: Moments) -> Outcome:
    """The check (see the module's docstring); not run when the drill has no body, no drill stream or no
    break-glass to take."""
    if not drill.body:
        return not_run("no drill body (switch-on did not run)")
    if drill.data is None or drill.twin is None:
        return not_run("break-glass is taken only on a drill stream, never on a real one (its records would reach "
                       "the drill body), and this drill has none: it was run without the ingest API and delivery "
                       "topics")
    found = glass_for(drill.original or {}, drill.twin.template_entry, drill.template_id)
    if isinstance(found, str):
        return not_run(found)
    held = (((drill.catalog.current() or {}).get("bodies") or {}).get(drill.body) or {}).get("roles") or ()
    if found.role not in held:
        return not_run(f"drill body {drill.body} does not hold the break-glass role {found.role}")
    scope, why = drill_region(drill.body), f"Accord drill {drill.run}: for break-glass by drill body {drill.body}"
    emergency = None
    if found.level != "normal":
        emergency = declare_drill_emergency(drill.api, drill.original or {}, scope, found.level, why)
        moments.note(drill.flow, f"{found.level} declared for {scope} alone by {emergency.declarer.body}")
    try:
        return _Taking(drill, found, moments).run()
    finally:
        if emergency is not None:
            lift_drill_emergency(drill.api, emergency, f"{why}: the check is over")
            moments.note(drill.flow, f"{found.level} for {scope} lifted")


class _Taking:
    """One break-glass taken, checked on the live stream, reviewed and ended."""

    def __init__(self, drill: FlowDrill, glass: Glass, moments: Moments) -> None:
        assert drill.data is not None and drill.twin is not None
        self.drill, self.glass, self.moments = drill, glass, moments
        self.data, self.twin = drill.data, drill.twin
        self.actor = drill.actor(glass.role)
        self.topic = delivery_topic(drill.body, glass.role, self.twin.stream)
        self.batches, self.reviewed = 0, False

    def run(self) -> Outcome:
        drill, template = self.drill, self.twin.template_entry
        begun, mark = drill.monotonic(), self.data.control_end()
        review = drill.api.call("POST", "/break-glass", self.actor, {
            "stream": self.twin.stream, "purpose": template.get("purpose"),
            "justification": f"Accord drill {drill.run}: break-glass taken to exercise it and its review."})
        grant = str((review.get("challenges") or {}).get("decision_id"))
        self.moments.note(drill.flow, f"break-glass {grant} taken by {drill.body} ({self.glass.role}); review "
                                      f"{review['id']} opened")
        try:
            return self._checked(review, grant, begun, mark)
        finally:
            if not self.reviewed:   # the check failed before its review: the access taken must not outlive it
                self._end_anyway(review, grant)

    def _checked(self, review: Mapping[str, Any], grant: str, begun: float, mark: int) -> Outcome:
        drill = self.drill
        taken = self.data.control_written(f"{GRANT_PREFIX}{grant}", mark, WAIT_S)
        if taken is None:
            return failed(f"break-glass {grant} was taken but no grant was written to the control topic within "
                          f"{WAIT_S:g} s", self._since(begun))
        taken_s = self._applied(taken)
        if taken_s is None:
            return failed(f"no gate worker reported applying control offset {taken['offset']} (break-glass {grant}) "
                          f"within {WAIT_S:g} s", self._since(begun))
        given = self._given()
        if given.verdict == "fail":
            return failed(f"break-glass {grant}: {given.reason}", taken_s)
        ended = self._reviewed(review, grant)
        if isinstance(ended, str):
            return failed(ended, taken_s)
        deciders, end = ended
        ended_s = self._applied(end)
        if ended_s is None:
            return failed(f"no gate worker reported applying control offset {end['offset']} (the end of {grant}) "
                          f"within {WAIT_S:g} s", taken_s)
        after = self._after_end() if given.verdict == "pass" else not_run("no records before its end either")
        if after.verdict == "fail":
            return failed(f"break-glass {grant} ended in review: {after.reason}", max(taken_s, ended_s))
        before, after_end = ((f"; {given.reason}", f"; {after.reason}") if given.verdict == "pass" else
                             (f"; records not checked ({given.reason})", ""))
        return passed(
            f"{self.glass.level} declared for {drill_region(drill.body)} alone; break-glass {grant} taken by "
            f"{drill.body} ({self.glass.role}) on {self.twin.stream}, applied by the gates {taken_s:.3f} s after it "
            f"was written (control offset {taken['offset']}){before}; review {review['id']} ended it at tier 1, "
            f"decided by {', '.join(d.body for d in deciders)}, applied {ended_s:.3f} s after it was written "
            f"(control offset {end['offset']}){after_end}; the emergency is lifted after the check",
            max(taken_s, ended_s))

    def _since(self, begun: float) -> float:
        return round(self.drill.monotonic() - begun, 3)

    def _applied(self, control: Mapping[str, int]) -> float | None:
        """Seconds from the control record's writing to the first gate worker applying it."""
        applied_ms = self.data.enforced_at_ms(int(control["offset"]), WAIT_S)
        if applied_ms is None:
            return None
        return round(max(0, applied_ms - int(control["timestamp_ms"])) / 1000, 3)

    # -- records ----------------------------------------------------------------------------------------------
    def _publish(self) -> dict[bytes, Row] | Outcome:
        """A batch of the drill body's rows published through the ingest API, by where each was written; else
        why not (not run) or what went wrong (failed)."""
        records_check = self.drill.records
        if records_check is None:
            return not_run("the drill makes synthetic rows only for a single-tier drill body that was switched on")
        self.batches += 1
        area, real = records_check.area, self.twin.real
        rows = self.data.synthetic(real, area, area, BATCH, f"DRILL-{self.drill.run}-GLASS-{self.batches}",
                                   100 + self.batches)
        if rows is None:
            return not_run(UNMADE.get(real, f"the drill has no synthetic record generator for {real}"))
        outcomes = self.data.publish(self.twin.stream, records_check.publisher, rows)
        if refused := [o for o in outcomes if o.get("status") != "accepted"]:
            return failed(f"the ingest API quarantined the drill's synthetic records: {refused[0].get('reasons')}")
        return {source_of(o): rows[int(o["index"])] for o in outcomes}

    def _delivered(self) -> dict[bytes, Row] | Outcome:
        """What the gates delivered on the break-glass role's topic once they processed all that was published."""
        deadline = self.drill.monotonic() + GATE_WAIT_S
        while (behind := self.data.gate_behind(self.twin.stream)) != 0:
            if self.drill.monotonic() > deadline:
                where = "no position committed" if behind is None else f"{behind} behind"
                return failed(f"the gate group has not processed the drill's records on {self.twin.stream} within "
                              f"{GATE_WAIT_S:g} s ({where})")
            time.sleep(POLL_S)
        return {headers.get("accord.source", b""): value for value, headers in self.data.delivered(self.topic)}

    def _published_then_delivered(self) -> tuple[dict[bytes, Row], dict[bytes, Row]] | Outcome:
        """Rows published now (by source) and, once the gate group has processed them, what the topic holds."""
        published = self._publish()
        if isinstance(published, Outcome):
            return published
        received = self._delivered()
        if isinstance(received, Outcome):
            return received
        return published, received

    def _given(self) -> Outcome:
        """Rows published once the grant was applied reach the drill body as the grant gives them."""
        both = self._published_then_delivered()
        if isinstance(both, Outcome):
            return both
        published, received = both
        fields = dict((((self.drill.original or {}).get("streams") or {}).get(self.twin.real) or {}).get("fields")
                      or {})
        tier = granted(self.glass.tier, fields)
        if missing := [s for s in published if s not in received]:
            return failed(f"{len(missing)} of {len(published)} records published after the grant was applied were "
                          f"not delivered to {self.topic}")
        for source, row in published.items():
            if wrong := view_problems(expected_view(tier, sorted(fields), row), received[source]):
                return failed(f"row {source.decode()} on {self.topic}: {'; '.join(wrong)}")
        given = sorted(expected_view(tier, sorted(fields), next(iter(published.values()))))
        return passed(f"{len(published)} records published after it delivered to {self.topic} with exactly what "
                      f"the grant gives ({', '.join(given)})")

    def _after_end(self) -> Outcome:
        """Nothing published once the end was applied is delivered under the ended grant."""
        both = self._published_then_delivered()
        if isinstance(both, Outcome):
            return both
        published, received = both
        if leaked := [s for s in published if s in received]:
            return failed(f"{len(leaked)} of {len(published)} records published after the end was applied were "
                          f"delivered to {self.topic}")
        return passed(f"none of {len(published)} records published after the end delivered")

    # -- the review -------------------------------------------------------------------------------------------
    def _reviewed(self, review: Mapping[str, Any], grant: str) -> tuple[list[Actor], dict[str, int]] | str:
        """The review dispute's first-tier deciders end the access (`refused`); who decided, and the control record
        of the end (from the dispute's `enforced` event). Why not, as a failure's reason."""
        drill = self.drill
        deciders = reviewers(drill.original or {}, review)
        if not deciders:
            return f"review {review['id']} has too few deciders at tier {int(review.get('tier', 0)) + 1} who are " \
                   "not parties"
        dispute = self._decide(review, deciders)
        self.moments.note(drill.flow, f"review {review['id']} decided: {grant} ends")
        if not any(grant in ((e.get("data") or {}).get("revoke_grants") or ()) for e in dispute.get("timeline", [])):
            return (f"review {review['id']} is {dispute.get('state')!r} after its deciders ended the access, and "
                    f"did not end {grant}")
        end = _end_written(drill, dispute, deciders[0], f"{GRANT_PREFIX}{grant}")
        if end is None:
            return f"review {review['id']} ended {grant} but recorded no control record putting that in force"
        return deciders, end


    def _decide(self, review: Mapping[str, Any], deciders: list[Actor]) -> dict[str, Any]:
        """Each decider ends the access taken; the review dispute after the last one."""
        self.reviewed = True
        answer: dict[str, Any] = {}
        for decider in deciders:
            answer = self.drill.api.call("POST", f"/disputes/{review['id']}/decision", decider, {
                "outcome": "refused", "reason": f"Accord drill {self.drill.run}: reviewed; the access taken ends now."})
        return dict(answer.get("dispute") or {})

    def _end_anyway(self, review: Mapping[str, Any], grant: str) -> None:
        """End the access after a failed check, noting (not raising) what stops that: the check's failure stands."""
        deciders = reviewers(self.drill.original or {}, review)
        try:
            if deciders:
                self._decide(review, deciders)
                self.moments.note(self.drill.flow, f"break-glass {grant} ended in review {review['id']}")
                return
            why = "its review has too few deciders who are not parties"
        except AccordError as exc:
            why = str(exc)
        self.moments.note(self.drill.flow, f"break-glass {grant} not ended ({why}); it ends by itself at its expiry")


def reviewers(catalog: Mapping[str, Any], review: Mapping[str, Any]) -> list[Actor]:
    """As many deciders of the review's tier as it needs, none a party: the publisher's own (a tier decided by the
    publisher party), else the tier's named bodies; [] when there are too few."""
    tiers = (catalog.get("ladder") or {}).get("tiers") or []
    tier = tiers[int(review.get("tier", 0))] if tiers else {}
    deciders = tier.get("deciders") or {}
    role = str((deciders.get("roles") or ["ig-lead"])[0])
    wanted = int(tier.get("approvals", 1))
    if deciders.get("party") == "publisher":
        bodies = [str(review.get("publisher"))]
    else:
        parties = {review.get("publisher"), review.get("subscriber")}
        bodies = sorted(b for b in deciders.get("bodies") or () if b not in parties)
    if len(bodies) < wanted:
        return []
    return [Actor(body, role, f"{role}@{body}.drill") for body in bodies[:wanted]]


def _end_written(drill: FlowDrill, dispute: Mapping[str, Any], reader: Actor, key: str) -> dict[str, int] | None:
    """The control record (offset, timestamp_ms) under `key` that the dispute's `enforced` event names, read again
    until it is recorded."""
    deadline = drill.monotonic() + WAIT_S
    while True:
        enforced = [e for e in dispute.get("timeline", []) if e.get("type") == "enforced"]
        for control in [c for e in enforced for c in (e.get("data") or {}).get("control") or ()]:
            if control.get("key") == key:
                return {"offset": int(control["offset"]), "timestamp_ms": int(control["timestamp_ms"])}
        if drill.monotonic() > deadline:
            return None
        time.sleep(POLL_S)
        dispute = drill.api.call("GET", f"/disputes/{dispute['id']}", reader)
