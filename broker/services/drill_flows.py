"""The checks a drill runs for each template flow, on a live deployment, through the governance API as the people
who would act (a drill body's analyst and DPH, the publisher's reviewers, Accord's operator).

Drill bodies (`drill-<run>-t1`) and drill streams (each flow's stream's twin, `<publisher>.drill-<run>-<name>`, with
a copy of the template naming it) are added to the applied catalog for the run and removed after it. The drill body
asks for the twin from the template's copy, so the records the drill publishes (synthetic, through the ingest API as
the publisher) reach the drill body and no real subscriber. Checks the drill cannot make safely on a live
deployment are reported as not run with the reason, never as passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker.domain.drills import (
    APPROVAL_TO_FIRST_RECORD_TARGET_S,
    DRILL_BODY_PREFIX,
    ENFORCEMENT_TARGET_S,
    FLOWS,
    drill_region,
    is_drill_body,
)
from broker.domain.geography import LaTable
from broker.domain.ladder import Actor
from broker.errors import AccordError
from broker.services.drill_closed import Control, FailClosed
from broker.services.drill_default import dispute_default
from broker.services.drill_glass import break_glass
from broker.services.drill_records import RecordChecks
from broker.services.drill_runner import FIRST_RECORD, Check, Moments, Outcome, failed, not_run, passed
from broker.services.drill_streams import (
    DrillData,
    DrillStream,
    granted,
    make_twin,
    requestable,
    tier_of,
    with_twin,
)
from broker.services.drill_tiers import TierViews

NEEDS_DRILL_STREAMS = "needs drill streams"
OPERATOR = Actor("accord", "operator", "Accord drill")
# The drill's analyst asks for the least a template gives: its minimised tier's fields.
DRILL_DURATION = "PT1H"


class GovernanceCalls(Protocol):
    """The governance HTTP API, called as `actor` (the adapter mints that person's short-lived token)."""

    def call(self, method: str, path: str, actor: Actor, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        ...


class AppliedCatalog(Protocol):
    """The compiled catalog in force on the deployment (read from its control topic); None before any is applied."""

    def current(self) -> Mapping[str, Any] | None: ...


# Single-tier authorities (unitary, metropolitan district, London borough): a drill body there is upper tier alone.
_SINGLE_TIER = ("E06", "E08", "E09")


def drill_body_entry(catalog: Mapping[str, Any], ident: str) -> dict[str, Any] | None:
    """A compiled body for drill body `ident`, named as a drill, with the roles templates grant to, upper tier (so
    the templates' row scopes apply to it) and, where there is one, in a single-tier area no local body of the
    catalog serves, so that it mirrors no council's rows; else with the areas of the first upper-tier council; in a
    region of its own."""
    bodies = list((catalog.get("bodies") or {}).values())
    councils = [b for b in bodies if b.get("kind") == "local" and b.get("tier") in ("unitary", "county")]
    if not councils:
        return None
    every = {code for b in bodies if b.get("kind") == "national" for code in b.get("served_areas") or ()}
    served = {code for b in bodies if b.get("kind") != "national" for code in b.get("served_areas") or ()}
    spare = sorted(code for code in every - served if str(code).startswith(_SINGLE_TIER))
    place: dict[str, Any] = {}
    if spare:
        place = {"tier": "unitary", "areas": spare[:1], "served_areas": spare[:1]}
    # In a region of its own, so an emergency the drill declares there (break-glass needs one) is its alone.
    return {**councils[0], **place, "name": f"Accord drill body {ident}", "roles": ["analyst", "dph"],
            "regions": [drill_region(ident)]}


@dataclass
class FlowDrill:
    """The state one flow's checks share: the drill body, the request that switched it on."""

    flow: str
    run: str
    api: GovernanceCalls
    catalog: AppliedCatalog
    data: DrillData | None = None
    monotonic: Callable[[], float] = time.monotonic
    original: Mapping[str, Any] | None = None
    body: str = ""
    request: dict[str, Any] = field(default_factory=dict)
    twin: DrillStream | None = None
    records: RecordChecks | None = None
    approved_at: float | None = None
    withdrawal: Mapping[str, Any] | None = None     # the revocation's control record (offset, timestamp_ms)
    area: str = ""                                  # the drill body's first area
    control: Control | None = None                  # the processes the drill may stop (the local stack's alone)
    time_scale: float = 1.0                         # the run's --time-scale: the drill's disputes' compression
    geography: LaTable | None = None                # the LA table, for the two-tier views (drill_tiers.py)

    @property
    def template_id(self) -> str:
        return FLOWS[self.flow]

    def _template(self) -> Mapping[str, Any] | None:
        """The template the drill body asks for: the copy naming the drill stream once there is one."""
        if self.twin is not None:
            return self.twin.template_entry
        return ((self.original or {}).get("templates") or {}).get(self.template_id)

    def actor(self, role: str) -> Actor:
        return Actor(self.body, role, f"{role}@{self.body}.drill")

    # -- drill bodies -----------------------------------------------------------------------------------------
    def add_body(self, moments: Moments) -> str | None:
        """Apply the catalog with the drill body added; why not, when it cannot be."""
        self.original = self.catalog.current()
        if self.original is None:
            return "no catalog is applied on this deployment (`accord catalog apply`)"
        if self._template() is None:
            return f"the applied catalog has no template {self.template_id}"
        body = f"{DRILL_BODY_PREFIX}{self.run}-{self.flow.lower()}"
        entry = drill_body_entry(self.original, body)
        if entry is None:
            return "the applied catalog has no upper-tier local body whose areas a drill body could take"
        self.area = str((entry.get("areas") or [""])[0])
        tier = tier_of(self._template() or {}) or {}
        entry["roles"] = sorted({*entry["roles"], *(tier.get("roles") or ())})
        drilled = {**self.original, "bodies": {**self.original["bodies"], body: entry},
                   "revision": f"{self.original.get('revision')}+{body}"}
        if self.data is not None:
            self.twin = make_twin(self.data, self.original, self.template_id, self.run)
            drilled = with_twin(drilled, self.twin)
        self.api.call("PUT", "/catalog", OPERATOR, {"catalog": drilled})
        self.body = body    # only once applied: a catalog refused needs no undoing
        moments.note(self.flow, f"drill body {body}{f' and stream {self.twin.stream}' if self.twin else ''} added "
                                f"to catalog {self.original.get('revision')}")
        return None

    def remove_body(self) -> None:
        """Apply the catalog as it was before the drill: nothing when the drill never added its body, or when a
        catalog applied since (by an operator, during the drill) has no drill body to remove and must stay."""
        if self.original is None or not self.body:
            return
        if self.records is not None and self.data is not None:
            self.data.retire_login(self.body, self.records.role)
            self.records = None
        current = self.catalog.current() or {}
        if self.body in (current.get("bodies") or {}):
            self.api.call("PUT", "/catalog", OPERATOR, {"catalog": dict(self.original)})
        self.body = ""

    # -- checks -----------------------------------------------------------------------------------------------
    def switch_on(self, moments: Moments) -> Outcome:
        """Request from the template as the drill body's analyst, approved by the template's reviewers."""
        why = self.add_body(moments)
        if why is not None:
            return not_run(why)
        template = self._template() or {}
        tier = tier_of(template)
        if tier is None:
            return not_run(f"template {self.template_id} has no tier to request")
        role = str((tier.get("roles") or ["analyst"])[0])
        asked = self.twin.template if self.twin is not None else self.template_id
        form = {"template": asked, "purpose": template.get("purpose"), "duration": DRILL_DURATION,
                "fields": sorted(requestable(tier, self._stream_fields())),
                "justification": f"Accord drill {self.run}: switching {self.flow} on from its template."}
        begun = self.monotonic()
        made = self.api.call("POST", "/requests", self.actor(role), form)
        moments.note(self.flow, f"request {made['id']} made")
        for reviewing in _reviewer_roles(template):
            publisher = str(template.get("publisher"))
            reviewer = Actor(publisher, reviewing, f"{reviewing}@{publisher}.drill")
            made = self.api.call("POST", f"/requests/{made['id']}/approvals", reviewer,
                                 {"reason": f"Accord drill {self.run}: approved by the template's {reviewing}."})
            moments.note(self.flow, f"approved by the publisher's {reviewing}")
        self.approved_at = self.monotonic()
        seconds = round(self.approved_at - begun, 3)
        self.request = made
        if made.get("state") != "live":
            return failed(f"request {made['id']} is {made.get('state')!r} after every reviewer approved, not live",
                          seconds)
        moments.note(self.flow, f"request {made['id']} live")
        self.records = self._record_checks(granted(tier, self._stream_fields()), role, template)
        return passed(f"request {made['id']} from {self.template_id} made, approved by "
                      f"{', '.join(_reviewer_roles(template))} and live", seconds)

    def _record_checks(self, tier: Mapping[str, Any], role: str, template: Mapping[str, Any]
                       ) -> RecordChecks | None:
        """The record checks of a live drill grant on the drill stream (None without drill streams)."""
        if self.data is None or self.twin is None:
            return None
        bodies = (self.original or {}).get("bodies") or {}
        area = self.area
        if not area.startswith(_SINGLE_TIER):
            return None     # synthetic rows are made for a single-tier authority
        elsewhere = next((str(b["areas"][0]) for ident, b in bodies.items() if b.get("kind") == "local"
                          and not is_drill_body(ident) and (b.get("areas") or [""])[0].startswith(_SINGLE_TIER)
                          and b["areas"][0] != area), None)
        publisher = str(template.get("publisher"))
        checks = RecordChecks(self.data, self.twin, self.run, self.body, role, tier, area, elsewhere,
                              Actor(publisher, "ig-lead", f"publisher@{publisher}.drill"), self.monotonic)
        checks.reader = self.data.login(self.body, role)
        return checks

    def _stream_fields(self) -> Mapping[str, Any]:
        """The compiled fields of the template's real stream (names, kinds, tags)."""
        real = str((((self.original or {}).get("templates") or {}).get(self.template_id) or {}).get("stream"))
        return dict((((self.original or {}).get("streams") or {}).get(real) or {}).get("fields") or {})

    def first_record(self, _: Moments) -> Outcome:
        if self.records is None or self.approved_at is None:
            return not_run(self._why_no_records())
        return self.records.first_record(self.approved_at)

    def subscriber_view(self, _: Moments) -> Outcome:
        if self.records is None:
            return not_run(self._why_no_records())
        return self.records.view(sorted(self._stream_fields()))

    def revocation(self, _: Moments) -> Outcome:
        if self.records is None:
            return not_run(self._why_no_records())
        return self.records.revocation(self.withdrawal)

    def misroute(self, moments: Moments) -> Outcome:
        """A row delivered to the drill body is reported misrouted by the publisher (staged: the row is the drill
        body's, said to be another council's), and the drill body confirms its deletion: the report, its deadline
        and the confirmation go through the governance API onto the audit trail."""
        if self.records is None:
            return not_run(self._why_no_records())
        source = self.records.delivered_source()
        if source is None or self.records.elsewhere is None or self.twin is None:
            return not_run("no row was delivered to the drill body (approval-to-first-record did not pass), or "
                           "there is no other council's area to say it belongs to")
        publisher = self.records.publisher
        begun = self.monotonic()
        reported = self.api.call("POST", "/misroutes", publisher, {
            "stream": self.twin.stream, "recipient": self.body, "belongs_to": self.records.elsewhere,
            "source": source, "reason": f"Accord drill {self.run}: a staged misrouting, to exercise the report and "
                                        "the deletion it calls for."})
        moments.note(self.flow, f"misroute {reported['id']} reported by {publisher.body}")
        confirmed = self.api.call("POST", f"/misroutes/{reported['id']}/deletion", self.actor(self.records.role),
                                  {"statement": f"Accord drill {self.run}: the drill body holds no copy."})
        seconds = round(self.monotonic() - begun, 3)
        if confirmed.get("state") != "deleted":
            return failed(f"misroute {reported['id']} is {confirmed.get('state')!r} after the recipient confirmed "
                          "its deletion", seconds)
        moments.note(self.flow, f"misroute {reported['id']} deletion confirmed")
        return passed(f"row {source['topic']}/{source['partition']}/{source['offset']} reported misrouted by "
                      f"{publisher.body} (staged) and its deletion confirmed by {self.body} before its deadline "
                      f"{reported.get('deadline')}", seconds)

    def _why_no_records(self) -> str:
        if self.data is None:
            return f"{NEEDS_DRILL_STREAMS}: this drill was run without access to the ingest API and delivery topics"
        if self.body and not self.area.startswith(_SINGLE_TIER):
            return (f"the drill body's area {self.area} is not a single-tier authority, for which alone the drill "
                    "makes synthetic rows")
        return "no live drill grant on the drill stream (switch-on did not pass)"

    def dispute_decided(self, moments: Moments) -> Outcome:
        """A role of the drill body the drill's grant is not for (its DPH, or its analysts when the grant is the
        DPH's) disputes being refused one of the stream's fields; the publisher's IG lead decides."""
        if not self.body:
            return not_run("no drill body (switch-on did not run)")
        template = self._template() or {}
        fields = sorted(self._stream_fields())
        if not fields:
            return not_run(f"the applied catalog names no fields of {template.get('stream')}'s stream")
        role = "analyst" if self.request.get("role") == "dph" else "dph"
        raised = self.api.call("POST", "/disputes", self.actor(role), {
            "kind": "refusal", "stream": template.get("stream"), "role": role, "purpose": template.get("purpose"),
            "fields": fields[:1],
            "justification": f"Accord drill {self.run}: a refusal disputed to test the ladder."})
        begun = self.monotonic()
        moments.note(self.flow, f"dispute {raised['id']} raised")
        decider = Actor(str(template.get("publisher")), "ig-lead", f"ig-lead@{template.get('publisher')}.drill")
        answer = self.api.call("POST", f"/disputes/{raised['id']}/decision", decider,
                               {"outcome": "refused", "reason": f"Accord drill {self.run}: refusal stands."})
        decided = answer.get("dispute") or {}
        seconds = round(self.monotonic() - begun, 3)
        moments.note(self.flow, f"dispute {raised['id']} decided")
        outcome = (decided.get("decision") or {}).get("outcome")
        if decided.get("state") not in ("decided", "enforced") or outcome != "refused":
            return failed(f"dispute {raised['id']} is {decided.get('state')!r} with outcome {outcome!r}", seconds)
        return passed(f"dispute {raised['id']} decided at tier {int(decided.get('tier', 0)) + 1} ({outcome}), "
                      f"now {decided.get('state')}", seconds)


    def grant_withdrawn(self, moments: Moments) -> Outcome:
        """The publisher contests the drill's grant; the ladder's first tier it may go to withdraws it."""
        if not self.request or self.request.get("state") != "live":
            return not_run("no live grant (switch-on did not pass)")
        template = self._template() or {}
        publisher, grant = str(template.get("publisher")), f"request-{self.request['id']}"
        contester = Actor(publisher, "ig-lead", f"ig-lead@{publisher}.drill")
        begun = self.monotonic()
        raised = self.api.call("POST", "/disputes", contester, {
            "kind": "grant-contested", "stream": template.get("stream"), "subscriber": self.body,
            "role": self.request.get("role"), "purpose": template.get("purpose"), "decision_id": grant,
            "justification": f"Accord drill {self.run}: the drill's grant is withdrawn at its end."})
        moments.note(self.flow, f"grant {grant} contested by {publisher}")
        deciders = _deciders(self.original or {}, raised, {publisher, self.body})
        if deciders is None:
            return failed(f"tier {int(raised.get('tier', 0)) + 1} of dispute {raised['id']} has too few deciders who "
                          "are not parties", round(self.monotonic() - begun, 3))
        answer: dict[str, Any] = {}
        for decider in deciders:
            answer = self.api.call("POST", f"/disputes/{raised['id']}/approvals", decider,
                                   {"outcome": "granted", "reason": f"Accord drill {self.run}: withdrawn."})
        seconds = round(self.monotonic() - begun, 3)
        dispute = answer.get("dispute") or {}
        revoked = any(grant in ((e.get("data") or {}).get("revoke_grants") or ())
                      for e in dispute.get("timeline", []))
        if not revoked:
            return failed(f"dispute {raised['id']} is {dispute.get('state')!r} and did not withdraw {grant}",
                          seconds)
        moments.note(self.flow, f"grant {grant} withdrawn")
        self.request = {**self.request, "state": "withdrawn"}
        self.withdrawal = _revocation(self.api, dispute, decider=deciders[0])
        return passed(f"grant {grant} contested by {publisher} and withdrawn by "
                      f"{', '.join(d.body for d in deciders)} at tier {int(dispute.get('tier', 0)) + 1}", seconds)


def _deciders(catalog: Mapping[str, Any], dispute: Mapping[str, Any], parties: set[str]) -> list[Actor] | None:
    """As many deciders of the dispute's tier as it needs, none of them a party; None when there are too few."""
    tiers = (catalog.get("ladder") or {}).get("tiers") or []
    tier = tiers[int(dispute.get("tier", 0))] if tiers else {}
    deciders = tier.get("deciders") or {}
    bodies = sorted(set(deciders.get("bodies") or []) - parties)
    role = str((deciders.get("roles") or ["governance-board"])[0])
    wanted = int(tier.get("approvals", 1))
    if len(bodies) < wanted:
        return None
    return [Actor(body, role, f"{role}@{body}.drill") for body in bodies[:wanted]]


def _revocation(api: GovernanceCalls, dispute: Mapping[str, Any], decider: Actor) -> Mapping[str, Any] | None:
    """The control record (offset, timestamp_ms) that put the dispute's decision in force: from its `enforced`
    event, read again if the decision's answer came before it."""
    for _ in range(20):
        enforced = [e for e in dispute.get("timeline", []) if e.get("type") == "enforced"]
        control = (enforced[-1].get("data") or {}).get("control") if enforced else None
        if control:
            return dict(max(control, key=lambda c: int(c["offset"])))
        time.sleep(0.25)
        dispute = api.call("GET", f"/disputes/{dispute['id']}", decider)
    return None


def _reviewer_roles(template: Mapping[str, Any]) -> list[str]:
    """One reviewer of each role the template's approval needs (its `one_of_each`, else its first roles)."""
    approval = template.get("approval") or {}
    if approval.get("one_of_each"):
        return sorted(approval["one_of_each"])
    return list(approval.get("roles") or ["ig-lead"])[: int(approval.get("approvals", 1))]


def _waiting(reason: str) -> Callable[[Moments], Outcome]:
    return lambda _: not_run(reason)


def flow_checks(drill: FlowDrill) -> list[Check]:
    """The checks of one flow, in the order they run (later ones use what earlier ones set up)."""
    flow = drill.flow
    return [
        Check(flow, "switch-on", drill.switch_on),
        Check(flow, FIRST_RECORD, drill.first_record, APPROVAL_TO_FIRST_RECORD_TARGET_S),
        Check(flow, "subscriber-view", TierViews(drill, OPERATOR, _deciders).check),
        # While the drill's grant is live (before it is withdrawn): a gate that holds nothing back shows nothing.
        Check(flow, "fail-closed", lambda _: FailClosed(drill.control).run(drill.records, drill._why_no_records())),
        Check(flow, "dispute-decision", drill.dispute_decided),
        Check(flow, "grant-withdrawn", drill.grant_withdrawn),
        Check(flow, "revocation", drill.revocation, ENFORCEMENT_TARGET_S),
        Check(flow, "break-glass", lambda moments: break_glass(drill, moments), ENFORCEMENT_TARGET_S),
        # After break-glass: an emergency default's provisional grant lasts its scaled period beyond the check.
        Check(flow, "dispute-default", lambda moments: dispute_default(drill, moments)),
        Check(flow, "misroute", drill.misroute),
    ]


def drills_for(flows: Sequence[str], run: str, api: GovernanceCalls, catalog: AppliedCatalog,
               data: DrillData | None = None, control: Control | None = None, time_scale: float = 1.0,
               geography: LaTable | None = None) -> tuple[list[FlowDrill], list[Check]]:
    """The drills of `flows` and their checks, each flow on a drill stream of its own when `data` is given (and
    its subscriber views in two-tier places too when the LA table `geography` is); with `control` (the local
    stack's processes) the fail-closed check stops OPA and a gate worker; the drill's disputes run on the ladder
    compressed by `time_scale`."""
    drills, checks = [], []
    for flow in flows:
        drill = FlowDrill(flow, run, api, catalog, data, control=control, time_scale=time_scale,
                          geography=geography)
        drills.append(drill)
        checks.extend(flow_checks(drill))
    return drills, checks


def tear_down(drills: Sequence[FlowDrill]) -> list[str]:
    """Remove every drill body; what could not be removed (the drill's operator must then apply the catalog)."""
    problems = []
    for drill in drills:
        if drill.request.get("state") == "live":
            problems.append(f"{drill.flow}: grant request-{drill.request.get('id')} of drill body {drill.body} was "
                            f"not withdrawn; it ends by itself after {DRILL_DURATION}")
        try:
            drill.remove_body()
        except AccordError as exc:
            problems.append(f"{drill.flow}: drill body {drill.body} not removed ({exc}); apply the catalog again")
    return problems
