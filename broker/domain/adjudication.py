"""Governance commands as pure functions: each checks the rules against the current state and returns the events
to append. Nothing here reads a clock or a topic; the service passes `now`, the state and the applied catalog."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.domain.backfill import parse_history
from broker.domain.disputes import KINDS, OUTCOMES, URGENCIES, Dispute, stamp
from broker.domain.drills import DRILL_BODY_PREFIX, is_drill_body
from broker.domain.flows import Flow, legal_basis_ends_at
from broker.domain.governance import GovernanceEvent, GovernanceState, new_event
from broker.domain.grant_fields import FieldGrant, field_specs
from broker.domain.ladder import Actor, Ladder, Tier
from broker.errors import GovernanceError, InvalidRequestError, NotAuthorisedError

Event = GovernanceEvent  # one event on the governance topic (broker/domain/governance.py)


@dataclass(frozen=True)
class Context:
    """What every command reads: the governance state, the applied catalog, its ladder and the time."""

    state: GovernanceState
    catalog: Mapping[str, Any]
    ladder: Ladder
    now: dt.datetime

    def body(self, ident: str) -> Mapping[str, Any]:
        bodies = self.catalog.get("bodies", {})
        if ident not in bodies:
            raise GovernanceError(f"unknown body {ident!r}; known: {', '.join(sorted(bodies))}")
        return dict(bodies[ident])

    def stream(self, ident: str) -> Mapping[str, Any]:
        streams = self.catalog.get("streams", {})
        if ident not in streams:
            raise GovernanceError(f"unknown stream {ident!r}; known: {', '.join(sorted(streams))}")
        return dict(streams[ident])

    def level_of(self, body: str) -> str:
        """The body's level; a body a later catalog dropped answers to the national level (and never blocks)."""
        known = self.catalog.get("bodies", {}).get(body) or {}
        return self.state.level_for(known.get("regions", []))

    def check_actor(self, actor: Actor) -> None:
        if actor.role not in self.body(actor.body).get("roles", []):
            raise NotAuthorisedError(f"{actor.body} has no role {actor.role!r}")


@dataclass(frozen=True)
class DisputeRequest:
    """What a challenger asks for; `fields` are stream field names, `areas` default to the subscriber's own."""

    kind: str
    stream: str
    role: str
    purpose: str
    justification: str
    subscriber: str | None = None
    fields: tuple[str, ...] = ()
    areas: tuple[str, ...] | None = None
    until: dt.datetime | None = None
    decision_id: str | None = None
    policy_revision: str | None = None
    urgency: str = "routine"
    evidence: tuple[str, ...] = field(default=())
    backfill: str | None = None  # history asked for once granted: P28D or a date (domain/backfill.py)
    # A drill's compressed ladder: the dispute's deadlines are the ladder's divided by this (drill bodies only).
    time_scale: float = 1.0


@dataclass(frozen=True)
class Decision:
    outcome: str
    reason: str
    fields: tuple[str, ...] | None = None
    areas: tuple[str, ...] | None = None
    until: dt.datetime | None = None
    # Fields granted other than as they are (masked, generalised, pseudonymised); the rest are kept.
    transforms: Mapping[str, FieldGrant] | None = None

    def proposal(self) -> dict[str, Any]:
        transforms = None if not self.transforms else {
            name: grant.to_json() for name, grant in sorted(self.transforms.items())}
        return {"outcome": self.outcome, "reason": self.reason,
                "fields": None if self.fields is None else sorted(self.fields),
                "areas": None if self.areas is None else sorted(self.areas), "until": stamp(self.until),
                "transforms": transforms}


def raise_dispute(ctx: Context, actor: Actor, request: DisputeRequest, ident: str) -> list[Event]:
    ctx.check_actor(actor)
    _check_request(request)
    stream = ctx.stream(request.stream)
    publisher = str(stream["owner"])
    subscriber = str(request.subscriber or _contested(ctx, request).get("subscriber") or actor.body)
    _check_standing(ctx, actor, request, publisher, subscriber)
    if request.role not in ctx.body(subscriber).get("roles", []):
        raise GovernanceError(f"{subscriber} has no role {request.role!r}; a grant needs a role it holds")
    _check_purpose(ctx, subscriber, request)
    sought = {"fields": _sought_fields(stream, request), "areas": _sought_areas(ctx, subscriber, request),
              "until": stamp(request.until), **_sought_history(request)}
    data: dict[str, Any] = {
        "kind": request.kind, "stream": request.stream, "publisher": publisher, "subscriber": subscriber,
        "role": request.role, "purpose": request.purpose,
        "challenges": {"decision_id": request.decision_id, "policy_revision": request.policy_revision},
        "sought": sought, "justification": request.justification.strip(), "urgency": request.urgency,
        "evidence": list(request.evidence)}
    scale = _time_scale(request, actor, subscriber)
    if scale != 1:
        data["time_scale"] = scale
    raised = new_event("raised", ident, ctx.now, actor, data)
    level = ctx.level_of(subscriber)
    first = _first_tier(ctx.ladder, actor.body, subscriber, publisher)
    deadline = ctx.now + ctx.ladder.tiers[first].deadline(level) / scale
    return [raised, _tier_opened(ident, ctx.now, first, level, deadline, "raised")]


def _check_request(request: DisputeRequest) -> None:
    if request.kind not in KINDS[:3]:
        raise GovernanceError(f"a dispute is raised against a refusal, a restriction or a grant, not {request.kind!r}")
    if request.urgency not in URGENCIES:
        raise GovernanceError(f"urgency {request.urgency!r} is not one of {', '.join(URGENCIES)}")
    if not request.justification.strip():
        raise GovernanceError("a dispute needs a justification: say why the data is needed (or must stop)")


def _time_scale(request: DisputeRequest, actor: Actor, subscriber: str) -> float:
    """The dispute's time scale: 1, or (a drill's dispute between drill bodies only) a compression of the ladder, so
    no real dispute's deadline ever moves."""
    scale = request.time_scale
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale < 1:
        raise InvalidRequestError(f"time_scale {scale!r} is not a number of at least 1 (1: the ladder's own deadlines)")
    if scale != 1 and not (is_drill_body(actor.body) and is_drill_body(subscriber)):
        raise NotAuthorisedError(
            f"time_scale {scale:g} compresses the ladder for drills only: both the body raising the dispute "
            f"({actor.body}) and its subscriber ({subscriber}) must be drill bodies ({DRILL_BODY_PREFIX}...)")
    return float(scale)


def _contested(ctx: Context, request: DisputeRequest) -> Mapping[str, Any]:
    """The agreement or grant in force that a grant-contested request names (empty for other kinds)."""
    if request.kind != "grant-contested":
        return {}
    known = {**ctx.catalog.get("agreements", {}), **ctx.state.grants}
    if request.decision_id not in known:
        raise GovernanceError(f"decision_id {request.decision_id!r} names no agreement or grant in force")
    return dict(known[request.decision_id])


def _check_standing(ctx: Context, actor: Actor, request: DisputeRequest, publisher: str, subscriber: str) -> None:
    body = ctx.body(subscriber)
    if request.kind == "grant-contested":
        if actor.body != publisher:
            raise NotAuthorisedError(f"only the stream's publisher ({publisher}) may contest a grant of it")
        target = _contested(ctx, request)
        if (target.get("stream"), target.get("subscriber")) != (request.stream, subscriber):
            raise GovernanceError(
                f"{request.decision_id} is an agreement for {target.get('subscriber')} of {target.get('stream')}, "
                f"not for {subscriber} of {request.stream}; contest it with its own stream and subscriber")
        return
    if actor.body == subscriber:
        return
    # A controller may seek onward sharing to its processor of data it already receives.
    receives = any(a.get("subscriber") == actor.body and a.get("stream") == request.stream
                   for a in ctx.catalog.get("agreements", {}).values())
    if not receives or body.get("kind") != "processor":
        raise NotAuthorisedError(
            f"{actor.body} may seek access only for itself, or for a processor of a stream it already receives")


def _check_purpose(ctx: Context, subscriber: str, request: DisputeRequest) -> None:
    for ident, agreement in sorted(ctx.catalog.get("agreements", {}).items()):
        same = agreement.get("subscriber") == subscriber and agreement.get("stream") == request.stream
        roles = {role for tier in agreement.get("tiers", []) for role in tier.get("roles", [])}
        if same and request.role in roles and agreement.get("purpose") != request.purpose:
            raise GovernanceError(
                f"{subscriber} already receives {request.stream} as {request.role} under {ident} for purpose "
                f"{agreement.get('purpose')!r}; a role has one purpose per stream, so ask under that purpose")


def _sought_history(request: DisputeRequest) -> dict[str, str]:
    if request.backfill is None:
        return {}
    try:
        return {"backfill": parse_history(request.backfill).text}
    except ValueError as exc:
        raise GovernanceError(str(exc)) from exc


def _sought_fields(stream: Mapping[str, Any], request: DisputeRequest) -> list[str]:
    known = stream.get("fields", {})
    if not request.fields and request.kind != "grant-contested":
        raise GovernanceError(f"the request names no fields; name the fields of {request.stream} that are needed")
    unknown = sorted(set(request.fields) - set(known))
    if unknown:
        raise GovernanceError(
            f"{request.stream} has no field(s) {', '.join(unknown)}; it has {', '.join(sorted(known))}")
    return sorted(set(request.fields))


def _sought_areas(ctx: Context, subscriber: str, request: DisputeRequest) -> list[str]:
    served = set(ctx.body(subscriber).get("served_areas", []))
    if request.areas is None:
        return sorted(served)
    beyond = sorted(set(request.areas) - served)
    if beyond:
        raise GovernanceError(f"{subscriber} does not serve {', '.join(beyond)}; rows stay with their own councils")
    return sorted(set(request.areas))


def _first_tier(ladder: Ladder, challenger: str, subscriber: str, publisher: str) -> int:
    """The first tier with enough deciders who are not parties: a publisher contesting its own grant skips its own
    reconsideration tier, but a board it sits on still has its other members."""
    for index, tier in enumerate(ladder.tiers):
        parties = {challenger, subscriber} | (set() if tier.party == "publisher" else {publisher})
        if len(tier.decider_bodies(publisher) - parties) >= tier.approvals:
            return index
    return ladder.last


def _tier_opened(ident: str, at: dt.datetime, tier: int, level: str, deadline: dt.datetime, why: str) -> Event:
    data = {"tier": tier, "level": level, "deadline": stamp(deadline), "why": why}
    return new_event("tier-opened", ident, at, None, data)


def check_decider(ctx: Context, dispute: Dispute, actor: Actor) -> Tier:
    ctx.check_actor(actor)
    if dispute.state != "awaiting":
        raise GovernanceError(f"dispute {dispute.id} is {dispute.state}; only a dispute awaiting a decision is decided")
    if dispute.deadline is not None and dispute.deadline <= ctx.now:
        raise GovernanceError(
            f"tier {dispute.tier + 1} of dispute {dispute.id} passed its deadline {stamp(dispute.deadline)}; "
            "the dispute moves on to the next tier or its decisive default")
    tier = ctx.ladder.tiers[dispute.tier]
    if actor.body not in tier.decider_bodies(dispute.publisher) or actor.role not in tier.roles:
        raise NotAuthorisedError(
            f"dispute {dispute.id} is at tier {dispute.tier + 1} ({tier.name}); {actor.body} as {actor.role} "
            "is not one of its deciders")
    reconsidering = tier.party == "publisher" and actor.body == dispute.publisher
    if (actor.body in dispute.parties and not reconsidering) or actor.body == dispute.challenger.body:
        raise NotAuthorisedError(f"{actor.body} is a party to dispute {dispute.id} and cannot decide it")
    if any(a["actor"]["body"] == actor.body for a in dispute.approvals):
        raise GovernanceError(f"{actor.body} has already approved at tier {dispute.tier + 1} of dispute {dispute.id}")
    return tier


def decide(ctx: Context, ident: str, actor: Actor, decision: Decision) -> list[Event]:
    """An approval by one decider, and the decision itself once the tier's N approvals agree."""
    dispute = ctx.state.dispute(ident)
    tier = check_decider(ctx, dispute, actor)
    if not decision.reason.strip():
        raise GovernanceError("a decision needs a written reason")
    effect = decision_effect(ctx, dispute, decision)
    proposal = decision.proposal()
    events = [new_event("approved", ident, ctx.now, actor, {"tier": dispute.tier, **proposal})]
    agreeing = [a for a in dispute.approvals if _same(a, proposal)] + [{"actor": actor.to_json(), **proposal}]
    if len(agreeing) >= tier.approvals:
        by = [a["actor"] for a in agreeing]
        reasons = "; ".join(dict.fromkeys(str(a["reason"]).strip() for a in agreeing))
        data = {**proposal, "reason": reasons, "tier": dispute.tier, "by": by, **effect}
        events.append(new_event("decided", ident, ctx.now, actor, data))
    return events


def _same(approval: Mapping[str, Any], proposal: Mapping[str, Any]) -> bool:
    return all(approval.get(k) == proposal[k] for k in ("outcome", "fields", "areas", "until", "transforms"))


def decision_effect(ctx: Context, dispute: Dispute, decision: Decision) -> dict[str, Any]:
    """The policy change a decision makes: a grant, or revocations; a refusal changes nothing."""
    if decision.outcome not in OUTCOMES:
        raise GovernanceError(f"outcome {decision.outcome!r} is not one of {', '.join(OUTCOMES)}")
    if decision.transforms and (decision.outcome == "refused" or dispute.kind not in ("refusal", "restriction")):
        raise GovernanceError("transforms say how granted fields are delivered: only a decision that grants a "
                              "refusal or restriction dispute takes them")
    if dispute.kind in ("break-glass-review", "provisional-review"):
        return _reviewed(ctx, dispute, decision)
    if decision.outcome == "refused":
        return _refused(ctx, dispute)
    if dispute.kind == "grant-contested":
        return _contest_upheld(ctx, dispute, decision)
    return {"grant": _grant(ctx, dispute, decision)}


def _refused(ctx: Context, dispute: Dispute) -> dict[str, Any]:
    """A refusal after an appeal undoes what the lower tier put in force; otherwise it changes nothing."""
    own = f"dispute-{dispute.id}"
    if own in ctx.state.grants:
        return {"revoke_grants": [own]}
    target = str(dispute.challenges.get("decision_id"))
    revoked_here = any(e["type"] == "decided" and target in ((e.get("data") or {}).get("revoke_agreements") or ())
                       for e in dispute.timeline)
    if dispute.kind == "grant-contested" and revoked_here and target in ctx.state.revocations:
        return {"reinstate_agreements": [target]}
    return {}


def _contest_upheld(ctx: Context, dispute: Dispute, decision: Decision) -> dict[str, Any]:
    if decision.outcome != "granted":
        raise GovernanceError("a contested grant is either withdrawn (granted) or stands (refused)")
    target = str(dispute.challenges.get("decision_id"))
    if target in ctx.state.grants:
        return {"revoke_grants": [target]}
    return {"revoke_agreements": [target]}


def _reviewed(ctx: Context, dispute: Dispute, decision: Decision) -> dict[str, Any]:
    """A review confirms access taken in advance (granted), ends it now (refused) or sets its end."""
    target = str(dispute.challenges.get("decision_id"))
    current = ctx.state.grants.get(target)
    if decision.outcome == "refused":
        return {"revoke_grants": [target]}
    if decision.outcome == "granted" or current is None:
        return {}
    if decision.outcome != "granted-for-period" or decision.until is None:
        raise GovernanceError(
            "a review confirms access (granted), ends it (refused) or sets its end (granted-for-period)")
    return {"grant": {**current, "valid_until": stamp(_future(ctx, decision.until))}}


def _grant(ctx: Context, dispute: Dispute, decision: Decision) -> Flow:
    sought_fields = list(dispute.sought.get("fields") or [])
    sought_areas = list(dispute.sought.get("areas") or [])
    fields, areas = sought_fields, sought_areas
    if decision.outcome == "granted-in-part":
        if decision.fields is None and decision.areas is None and not decision.transforms:
            raise GovernanceError("granted-in-part names the fields or areas granted (a subset of those sought), "
                                  "or how fields are transformed")
        fields = _subset("fields", decision.fields, sought_fields)
        areas = _subset("areas", decision.areas, sought_areas)
    until = decision.until or _sought_until(dispute) or ctx.now + ctx.ladder.grant_period
    if decision.outcome == "granted-for-period" and decision.until is None:
        raise GovernanceError("granted-for-period needs `until`, the end of the period")
    if not fields:
        raise GovernanceError(f"dispute {dispute.id} names no fields to grant; grant in part with `fields`")
    specs = field_specs(dispute.stream, ctx.stream(dispute.stream), fields, decision.transforms or {})
    return grant_document(ctx, dispute, f"dispute-{dispute.id}", specs, areas, _future(ctx, until))


def _subset(what: str, chosen: Sequence[str] | None, sought: list[str]) -> list[str]:
    if chosen is None:
        return sought
    extra = sorted(set(chosen) - set(sought))
    if extra:
        raise GovernanceError(f"granted-in-part may only narrow what was sought; {what} not sought: {', '.join(extra)}")
    return sorted(set(chosen))


def _sought_until(dispute: Dispute) -> dt.datetime | None:
    text = dispute.sought.get("until")
    return None if text is None else dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def _future(ctx: Context, until: dt.datetime) -> dt.datetime:
    if until <= ctx.now:
        raise GovernanceError(f"`until` {stamp(until)} is not in the future")
    return until


def grant_document(ctx: Context, dispute: Dispute, ident: str, fields: Mapping[str, Any],
                   areas: Sequence[str], until: dt.datetime, other_fields: str = "drop") -> Flow:
    """An agreement-shaped grant the sharing-plan policy reads from the control topic (`grant/<id>`). It ends with the
    legal basis of the agreements it extends (see legal_basis_end), whatever end was decided."""
    lapse = legal_basis_end(ctx.catalog, dispute.subscriber, dispute.stream)
    if lapse is not None and lapse <= ctx.now:
        raise GovernanceError(f"the legal basis of {dispute.subscriber}'s agreements on {dispute.stream} ended at "
                              f"{stamp(lapse)}: nothing can be granted under it; agree a new basis first")
    if lapse is not None:
        until = min(until, lapse)
    return {
        "id": ident, "template": None, "publisher": dispute.publisher, "subscriber": dispute.subscriber,
        "stream": dispute.stream, "purpose": dispute.purpose, "legal_basis": [],
        "tiers": [{"name": "dispute", "roles": [dispute.role], "other_fields": other_fields, "fields": dict(fields)}],
        "row_scope": {"areas": sorted(areas)}, "valid_from": stamp(ctx.now), "valid_until": stamp(until),
        "review_date": until.date().isoformat(), "emergency_level_required": "normal", "signatories": [],
        "source": {"dispute": dispute.id},
        # History sought with the dispute, replayed once the grant is in force (services/backfill.py).
        **({"backfill": str(dispute.sought["backfill"])} if dispute.sought.get("backfill") else {}),
    }


def legal_basis_end(catalog: Mapping[str, Any], subscriber: str, stream: str) -> dt.datetime | None:
    """When the legal basis under which `subscriber` receives `stream` ends: the latest end among its agreements on
    the stream, or None when one of them has no end (or there is none: a grant then stands on its own decision)."""
    ends: list[dt.datetime] = []
    for agreement in catalog.get("agreements", {}).values():
        if agreement.get("subscriber") != subscriber or agreement.get("stream") != stream:
            continue
        end = legal_basis_ends_at(agreement)
        if end is None:
            return None
        ends.append(end)
    return max(ends) if ends else None
