"""Access requests as pure commands: make one against a template, review it (N of M approvals, one approver from
each required role), climb the dispute ladder's tiers on its deadlines and end in the ladder's decisive default;
each returns the governance events to append. The grant an approval makes is the template instantiated for the
requester, carried on the control topic like a dispute's grant (`grant/request-<id>`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from broker.domain.access_requests import AccessRequest, parse_duration
from broker.domain.adjudication import Context, Event
from broker.domain.adjudication import _tier_opened as tier_opened
from broker.domain.disputes import parse_stamp, stamp
from broker.domain.governance import apply, new_event
from broker.domain.ladder import Actor
from broker.errors import GovernanceError, InvalidRequestError, NotAuthorisedError

# Without an `approval` block a template is approved by one IG lead of its publisher.
DEFAULT_APPROVAL: Mapping[str, Any] = {"approvals": 1, "roles": ["ig-lead"], "one_of_each": []}


@dataclass(frozen=True)
class RequestForm:
    """What a body asks for: a stream from a template, for its own role (the token's)."""

    template: str
    purpose: str
    justification: str
    duration: str
    legal_basis: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    areas: tuple[str, ...] | None = None
    backfill: str | None = None


@dataclass(frozen=True)
class Reviewers:
    """Who reviews a request at one tier: role holders of `bodies`; `approvals` of them, one of each `one_of_each`."""

    bodies: frozenset[str]
    roles: frozenset[str]
    approvals: int
    one_of_each: tuple[str, ...] = field(default=())
    refusals: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"bodies": sorted(self.bodies), "roles": sorted(self.roles), "approvals": self.approvals,
                "one_of_each": list(self.one_of_each), "refusals": self.refusals}


def template_of(ctx: Context, ident: str) -> Mapping[str, Any]:
    templates = ctx.catalog.get("templates", {})
    if ident not in templates:
        raise InvalidRequestError(f"unknown template {ident!r}; templates: {', '.join(sorted(templates))}")
    return dict(templates[ident])


def reviewers(ctx: Context, request: AccessRequest, tier: int | None = None) -> Reviewers:
    """Tier 0: the publisher's reviewers as the template says; above, the ladder's deciders who are no party."""
    index = request.tier if tier is None else tier
    if index == 0:
        rule = {**DEFAULT_APPROVAL, **(ctx.catalog.get("templates", {}).get(request.template, {}).get("approval")
                                       or {})}
        return Reviewers(frozenset({request.publisher}), frozenset(rule["roles"]), int(rule["approvals"]),
                         tuple(rule["one_of_each"]))
    rung = ctx.ladder.tiers[index]
    bodies = rung.decider_bodies(request.publisher) - {request.body, request.publisher}
    return Reviewers(bodies, rung.roles, rung.approvals, refusals=rung.approvals)


def make(ctx: Context, actor: Actor, form: RequestForm, ident: str) -> list[Event]:
    """The `request-made` event; InvalidRequestError (400) says what in the form does not fit the template."""
    ctx.check_actor(actor)
    template = template_of(ctx, form.template)
    tier = _tier_for(template, form.template, actor.role)
    if form.purpose != template.get("purpose"):
        raise InvalidRequestError(f"template {form.template} is for purpose {template.get('purpose')!r}, not "
                                  f"{form.purpose!r}; a different purpose needs a different template")
    if not form.justification.strip():
        raise InvalidRequestError("a request needs a justification: say why the data is needed")
    _check_open(ctx, actor, form.template)
    _check_one_purpose(ctx, actor, str(template["stream"]), form.purpose)
    duration = parse_duration(form.duration, "duration")
    if duration <= dt.timedelta() or duration > ctx.ladder.grant_period:
        raise InvalidRequestError(f"duration {form.duration} must be more than nothing and at most the ladder's grant "
                                  f"period ({int(ctx.ladder.grant_period.total_seconds() // 86400)} days)")
    if form.backfill is not None:
        parse_duration(form.backfill, "backfill (history wanted)")
    data = {"request": ident, "template": form.template, "stream": template["stream"],
            "publisher": template["publisher"], "purpose": form.purpose,
            "legal_basis": _legal_basis(template, form), "fields": _fields(ctx, template, tier, form),
            "areas": _areas(ctx, actor.body, template, form), "duration": form.duration.strip().upper(),
            "backfill": None if form.backfill is None else form.backfill.strip().upper(),
            "justification": form.justification.strip()}
    level = ctx.level_of(actor.body)
    deadline = ctx.now + ctx.ladder.tiers[0].deadline(level)
    return [new_event("request-made", None, ctx.now, actor,
                      {**data, "tier": 0, "level": level, "deadline": stamp(deadline)})]


def _tier_for(template: Mapping[str, Any], ident: str, role: str) -> Mapping[str, Any]:
    for tier in template.get("tiers", []):
        if role in tier.get("roles", []):
            return dict(tier)
    roles = sorted({r for tier in template.get("tiers", []) for r in tier.get("roles", [])})
    raise InvalidRequestError(f"template {ident} gives no access to role {role!r} (it serves {', '.join(roles)}); "
                              "ask with a token for one of those roles")


def _check_open(ctx: Context, actor: Actor, template: str) -> None:
    for other in ctx.state.requests.values():
        if (other.body, other.role, other.template) == (actor.body, actor.role, template) and other.state in (
                "awaiting", "approved", "live"):
            raise GovernanceError(f"{actor.body} as {actor.role} already has request {other.id} for {template} "
                                  f"({other.state}); follow that one")


def _check_one_purpose(ctx: Context, actor: Actor, stream: str, purpose: str) -> None:
    """A role receives a stream on one delivery topic, so for one purpose (as the catalog compiler holds)."""
    flows = {**ctx.catalog.get("agreements", {}), **ctx.state.grants}
    for ident, flow in sorted(flows.items()):
        roles = {role for tier in flow.get("tiers", []) for role in tier.get("roles", [])}
        if (flow.get("subscriber"), flow.get("stream")) == (actor.body, stream) and actor.role in roles \
                and flow.get("purpose") != purpose:
            raise GovernanceError(f"{actor.body} already receives {stream} as {actor.role} under {ident} for "
                                  f"purpose {flow.get('purpose')!r}; a role gets a stream for one purpose")


def _legal_basis(template: Mapping[str, Any], form: RequestForm) -> list[str]:
    offered = list(template.get("legal_basis", []))
    if not form.legal_basis:
        return sorted(offered)
    beyond = sorted(set(form.legal_basis) - set(offered))
    if beyond:
        raise InvalidRequestError(f"template {form.template} rests on {', '.join(offered)}; it cannot be used under "
                                  f"{', '.join(beyond)}")
    return sorted(set(form.legal_basis))


def _fields(ctx: Context, template: Mapping[str, Any], tier: Mapping[str, Any], form: RequestForm) -> list[str]:
    if not form.fields:
        raise InvalidRequestError("the request names no fields; name the fields needed (minimum necessary)")
    allowed = _allowed_fields(ctx, template, tier)
    beyond = sorted(set(form.fields) - set(allowed))
    if beyond:
        raise InvalidRequestError(f"template {form.template} does not give {', '.join(beyond)} to role(s) "
                                  f"{', '.join(tier.get('roles', []))}; it gives {', '.join(sorted(allowed))}")
    return sorted(set(form.fields))


def _allowed_fields(ctx: Context, template: Mapping[str, Any], tier: Mapping[str, Any]) -> dict[str, Any]:
    """Stream field → the rule the template's tier delivers it under."""
    rules = {name: rule for name, rule in tier.get("fields", {}).items() if rule.get("transform") != "drop"}
    if tier.get("other_fields") == "keep":
        # As the plans policy does: `other_fields: keep` never reaches a direct identifier the tier does not name.
        for name, spec in ctx.stream(str(template["stream"])).get("fields", {}).items():
            if name not in tier.get("fields", {}) and "direct-identifier" not in (spec or {}).get("tags", []):
                rules[name] = {"transform": "keep", "method": None, "as": name, "params": {}}
    return rules


def _areas(ctx: Context, body: str, template: Mapping[str, Any], form: RequestForm) -> list[str]:
    served = set(ctx.body(body).get("served_areas", []))
    scope = template.get("row_scope")
    if isinstance(scope, list):
        served &= set(scope)
    if form.areas is None:
        return sorted(served)
    beyond = sorted(set(form.areas) - served)
    if beyond:
        raise InvalidRequestError(f"{body} cannot ask for rows of {', '.join(beyond)} under {form.template}; its "
                                  "areas are its own (a county's include its districts)")
    if not form.areas:
        raise InvalidRequestError("the request names no areas; leave areas out to ask for all of the body's own")
    return sorted(set(form.areas))


# -- review ---------------------------------------------------------------------------------------------------------

def review(ctx: Context, ident: str, actor: Actor, verdict: str, reason: str) -> list[Event]:
    """One reviewer approves or refuses; the request is decided once its tier's quorum is met."""
    request = ctx.state.request(ident)
    ctx.check_actor(actor)
    if request.state != "awaiting":
        raise GovernanceError(f"access request {ident} is {request.state}; only a request awaiting review is reviewed")
    if request.deadline is not None and request.deadline <= ctx.now:
        raise GovernanceError(f"tier {request.tier + 1} of request {ident} passed its deadline "
                              f"{stamp(request.deadline)}; it moves on to the next tier or its decisive default")
    if actor.body == request.body:
        raise NotAuthorisedError(f"{actor.body} made request {ident}; the requesting body cannot review its own "
                                 "request")
    who = reviewers(ctx, request)
    if actor.body not in who.bodies or actor.role not in who.roles:
        raise NotAuthorisedError(f"request {ident} is at tier {request.tier + 1}; its reviewers are "
                                 f"{' or '.join(sorted(who.roles))} of {', '.join(sorted(who.bodies)) or 'no body'}, "
                                 f"not {actor.body} as {actor.role}")
    if any((r["actor"]["body"], r["actor"]["person"]) == (actor.body, actor.person) for r in request.reviews):
        raise GovernanceError(f"{actor.person} of {actor.body} has already reviewed request {ident} at this tier")
    if not reason.strip():
        raise InvalidRequestError("a review needs a written reason")
    reviewed = new_event("request-reviewed", None, ctx.now, actor,
                         {"request": ident, "verdict": verdict, "reason": reason.strip(), "tier": request.tier})
    after = [*request.reviews, {"actor": actor.to_json(), "verdict": verdict, "reason": reason.strip()}]
    return [reviewed, *_decided(ctx, request, who, after, actor)]


def _decided(ctx: Context, request: AccessRequest, who: Reviewers, reviews: Sequence[Mapping[str, Any]],
             actor: Actor) -> list[Event]:
    approving = [r for r in reviews if r["verdict"] == "approve"]
    refusing = [r for r in reviews if r["verdict"] == "refuse"]
    base = {"request": request.id, "tier": request.tier}
    if len(refusing) >= who.refusals:
        reasons = "; ".join(dict.fromkeys(str(r["reason"]) for r in refusing))
        return [new_event("request-refused", None, ctx.now, actor, {**base, "outcome": "refused", "reason": reasons,
                                                                     "by": [r["actor"] for r in refusing]})]
    if not quorum(who, [r["actor"] for r in approving]):
        return []
    by = [r["actor"] for r in approving]
    grant = instantiate(ctx, request, by, request.fields, ctx.now + parse_duration(request.duration, "duration"))
    reasons = "; ".join(dict.fromkeys(str(r["reason"]) for r in approving))
    return [new_event("request-approved", None, ctx.now, actor,
                      {**base, "outcome": "approved", "reason": reasons, "by": by, "grant": grant})]


def quorum(who: Reviewers, approvers: Sequence[Mapping[str, Any]]) -> bool:
    """N distinct approvers, among them one holder of each role the tier requires."""
    people = {(a["body"], a["person"]) for a in approvers}
    roles = {a["role"] for a in approvers}
    return len(people) >= who.approvals and set(who.one_of_each) <= roles


def instantiate(ctx: Context, request: AccessRequest, by: Sequence[Mapping[str, Any]], fields: Sequence[str],
                until: dt.datetime, tier_name: str | None = None) -> dict[str, Any]:
    """The template made an agreement for the requester: its tier's rules for `fields`, the areas asked for, signed
    by the approvers' verified identities (the sharing-plan policy reads it as a grant)."""
    template = template_of(ctx, request.template)
    tier = next((t for t in template.get("tiers", []) if t.get("name") == tier_name), None) \
        or _tier_for(template, request.template, request.role)
    allowed = _allowed_fields(ctx, template, tier)
    return {
        "id": request.grant_id, "template": request.template, "publisher": request.publisher,
        "subscriber": request.body, "stream": request.stream, "purpose": request.purpose,
        "legal_basis": list(request.legal_basis),
        "tiers": [{"name": str(tier.get("name")), "roles": [request.role], "other_fields": "drop",
                   "fields": {name: allowed[name] for name in sorted(fields) if name in allowed}}],
        "row_scope": {"areas": list(request.areas)}, "valid_from": stamp(ctx.now), "valid_until": stamp(until),
        "review_date": until.date().isoformat(),
        "emergency_level_required": str(template.get("emergency_level_required") or "normal"),
        "retention_s": template.get("retention_s"), "backfill": request.backfill,
        # Where the history wanted starts, for whatever delivers it (the gate delivers from approval on).
        "backfill_from": None if request.backfill is None else stamp(
            ctx.now - parse_duration(request.backfill, "backfill")),
        "signatories": [{"body": a["body"], "name": a["person"], "role": a["role"]} for a in by],
        "source": {"request": request.id},
    }


# -- the clock: escalation, decisive default, expiry ------------------------------------------------------------------

def due(ctx: Context) -> list[Event]:
    """Escalations, decisive defaults and expiries the clock has made due; a passed deadline fires as of when it
    passed, so a service that was down still ends every request within the ladder's bound."""
    events: list[Event] = []
    state = ctx.state
    while True:
        step = [e for ident in sorted(state.requests)
                for e in _due(replace(ctx, state=state), state.requests[ident])]
        if not step:
            return events
        events.extend(step)
        for event in step:
            state = apply(state, state.offset, event)


def _due(ctx: Context, request: AccessRequest) -> list[Event]:
    if request.state == "live" and request.grant_id in ctx.state.grants:
        until = parse_stamp(ctx.state.grants[request.grant_id]["valid_until"])
        if until <= ctx.now:
            return [new_event("request-expired", None, ctx.now, None, {
                "request": request.id, "revoke_grants": [request.grant_id], "expired_at": stamp(until),
                "reason": f"access granted by request {request.id} reached its end {stamp(until)}"})]
        return []
    if request.state != "awaiting" or request.deadline is None or request.deadline > ctx.now:
        return []
    if request.tier < ctx.ladder.last:
        nxt = request.tier + 1
        deadline = request.deadline + ctx.ladder.tiers[nxt].deadline(request.level)
        return [new_event("request-tier-opened", None, ctx.now, None, {
            "request": request.id, "tier": nxt, "level": request.level, "deadline": stamp(deadline),
            "why": "deadline passed"})]
    return decisive_default(ctx, request)


def decisive_default(ctx: Context, request: AccessRequest) -> list[Event]:
    """The ladder's decisive default: in a declared emergency a provisional grant of the template's minimised tier
    (of the fields asked for) for the default's period; otherwise the request is refused."""
    level = ctx.level_of(request.body)
    rule = ctx.ladder.decisive_default[level]
    data: dict[str, Any] = {"request": request.id, "tier": request.tier, "level": level,
                            "due_at": stamp(request.deadline), "by": [], "outcome": "refused"}
    template = ctx.catalog.get("templates", {}).get(request.template, {})
    minimised = template.get("minimised_tier")
    tier = next((t for t in template.get("tiers", []) if t.get("name") == minimised), None)
    if rule.outcome != "provisional-grant" or rule.period is None or tier is None:
        why = "no minimised tier in its template" if rule.outcome == "provisional-grant" else f"level {level}"
        data["reason"] = f"decisive default ({why}): no decision in time, so the request is refused"
        return [new_event("request-defaulted", None, ctx.now, None, data)]
    until = ctx.now + min(rule.period, parse_duration(request.duration, "duration"))
    fields = [name for name in _allowed_fields(ctx, template, tier) if name in request.fields] \
        or sorted(_allowed_fields(ctx, template, tier))
    grant = instantiate(ctx, request, [], fields, until, tier_name=str(minimised))
    data.update(outcome="provisional-grant", until=stamp(until), grant=grant, reason=(
        f"decisive default in a declared {level}: provisional grant of {request.template}'s minimised tier "
        f"'{minimised}' until {stamp(until)}, with mandatory review (dispute {request.id}-review)"))
    return [new_event("request-defaulted", None, ctx.now, None, data), *_review(ctx, request, grant)]


def _review(ctx: Context, request: AccessRequest, grant: Mapping[str, Any]) -> list[Event]:
    """The mandatory review of a provisional grant, as a dispute's default opens one: it climbs the ladder, and its
    decision confirms the grant, ends it or sets its end."""
    ident = f"{request.id}-review"
    fields = sorted(grant["tiers"][0]["fields"])
    data = {"kind": "provisional-review", "stream": request.stream, "publisher": request.publisher,
            "subscriber": request.body, "role": request.role, "purpose": request.purpose,
            "challenges": {"decision_id": grant["id"], "policy_revision": None},
            "sought": {"fields": fields, "areas": list(request.areas), "until": None},
            "justification": f"review of the provisional grant by default of access request {request.id}",
            "urgency": "urgent", "evidence": []}
    level = ctx.level_of(request.body)
    deadline = ctx.now + ctx.ladder.tiers[0].deadline(level)
    return [new_event("raised", ident, ctx.now, request.requester, data),
            tier_opened(ident, ctx.now, 0, level, deadline, "mandatory review")]


def shortened(ctx: Context, scope: str, level: str) -> list[Event]:
    """A level declared for `scope` (national or an E12 region) shortens the deadline of every request waiting in
    it to the level's, counted from the declaration; never lengthens one."""
    events = []
    for ident, request in sorted(ctx.state.requests.items()):
        if request.state != "awaiting" or request.deadline is None or level == "normal":
            continue
        regions = (ctx.catalog.get("bodies", {}).get(request.body) or {}).get("regions", [])
        if scope != "national" and scope not in regions:
            continue
        sooner = ctx.now + ctx.ladder.tiers[request.tier].deadline(level)
        if sooner < request.deadline:
            events.append(new_event("request-deadline-changed", None, ctx.now, None, {
                "request": ident, "level": level, "deadline": stamp(sooner), "why": f"{level} declared for {scope}"}))
    return events


def enforced(ctx: Context, request: AccessRequest, control: Sequence[Mapping[str, Any]]) -> list[Event]:
    return [new_event("request-enforced", None, ctx.now, None, {"request": request.id, "control": list(control)})]


def first_deliveries(ctx: Context, reports: Sequence[Mapping[str, Any]]) -> list[Event]:
    """For each live request still without one, the earliest delivery batch to its body's role of its stream
    written after its approval: when the first record reached the requester."""
    events = []
    for request in sorted(ctx.state.requests.values(), key=lambda r: r.id):
        if request.approved_at is None or request.first_delivery is not None or request.state not in (
                "live", "expired"):
            continue
        mine = [r for r in reports if (r.get("subscriber"), r.get("role"), r.get("stream")) == (
            request.body, request.role, request.stream) and parse_stamp(r["at"]) >= request.approved_at]
        if not mine:
            continue
        first = min(mine, key=lambda r: parse_stamp(r["at"]))
        seconds = (parse_stamp(first["at"]) - request.approved_at).total_seconds()
        events.append(new_event("request-first-delivery", None, ctx.now, None, {
            "request": request.id, "at": first["at"], "topic": first.get("topic"),
            "partition": first.get("partition"), "offset": first.get("first_offset"),
            "approval_to_first_record_s": round(seconds, 3)}))
    return events


def awaiting_first_delivery(requests: Mapping[str, AccessRequest]) -> dt.datetime | None:
    """The earliest approval among requests whose first delivery is not yet seen (None: nothing to look for)."""
    times = [r.approved_at for r in requests.values()
             if r.approved_at is not None and r.first_delivery is None and r.state in ("live", "expired")]
    return min(times) if times else None
