"""Deadlines, decisive defaults, appeals, comments, emergency declarations and break-glass, as pure functions
returning the governance events to append (see adjudication.py for raising and deciding)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from broker.domain.adjudication import Context, Event, _tier_opened, grant_document, legal_basis_end
from broker.domain.disputes import Dispute, fold, next_state, parse_stamp, stamp
from broker.domain.drills import is_drill_body, is_drill_region
from broker.domain.governance import NATIONAL, apply, check_level, new_event
from broker.domain.ladder import Actor
from broker.errors import GovernanceError, NotAuthorisedError

_REGION = re.compile(r"^E12\d{6}$")
BREAK_GLASS_PREFIX = "break-glass-"
BREAK_GLASS_EXPIRED = "break-glass-expired"


def due(ctx: Context) -> list[Event]:
    """Events the clock has made due at `ctx.now`: escalations, decisive defaults and closings.

    A passed deadline fires as of when it passed, so the next tier's deadline runs from the old one and a
    governance service that was down still ends every dispute within the ladder's bound. Everything due is returned
    at once: when several deadlines have passed, the whole chain down to the decisive default.
    """
    events: list[Event] = []
    state = ctx.state
    while True:
        step = [e for ident in sorted(state.disputes) for e in _due(replace(ctx, state=state), state.disputes[ident])]
        if not step:
            return events
        events.extend(step)
        for event in step:
            state = apply(state, state.offset, event)


def _due(ctx: Context, dispute: Dispute) -> list[Event]:
    if dispute.state == "enforced" and dispute.closes_at is not None and dispute.closes_at <= ctx.now:
        return [new_event("closed", dispute.id, ctx.now, None, {"why": "appeal window passed"})]
    if dispute.state != "awaiting" or dispute.deadline is None or dispute.deadline > ctx.now:
        return []
    if dispute.tier < ctx.ladder.last:
        nxt = dispute.tier + 1
        deadline = dispute.deadline + dispute.scaled(ctx.ladder.tiers[nxt].deadline(dispute.level))
        return [_tier_opened(dispute.id, ctx.now, nxt, dispute.level, deadline, "deadline passed")]
    return decisive_default(ctx, dispute)


def decisive_default(ctx: Context, dispute: Dispute) -> list[Event]:
    """The outcome stated in the ladder when the last tier lets its deadline pass."""
    level = ctx.level_of(dispute.subscriber)
    rule = ctx.ladder.decisive_default[level]
    data: dict[str, Any] = {"outcome": "refused", "level": level, "due_at": stamp(dispute.deadline),
                            "tier": dispute.tier, "by": []}
    if dispute.kind == "break-glass-review":
        data.update(_unreviewed_break_glass(ctx, dispute))
        return [new_event("defaulted", dispute.id, ctx.now, None, data)]
    if dispute.kind == "provisional-review":
        # For a review, "granted" keeps the access taken (see adjudication._reviewed); it still ends when it ends.
        data.update(outcome="granted", reason="decisive default: no review in time, so the access taken stands "
                                              "until it ends")
        return [new_event("defaulted", dispute.id, ctx.now, None, data)]
    if dispute.kind not in ("refusal", "restriction"):
        data["reason"] = "decisive default: no decision in time, so the challenged decision stands"
        return [new_event("defaulted", dispute.id, ctx.now, None, data)]
    if rule.outcome != "provisional-grant" or rule.period is None:
        data["reason"] = f"decisive default at level {level}: no decision in time, so the refusal stands"
        return [new_event("defaulted", dispute.id, ctx.now, None, data)]
    minimised = _minimised_tier(ctx, dispute)
    if minimised is None:
        data["reason"] = (f"decisive default at level {level}: no template for {dispute.stream} has a minimised "
                          "tier, so the refusal stands")
        return [new_event("defaulted", dispute.id, ctx.now, None, data)]
    template_id, tier = minimised
    lapse = legal_basis_end(ctx.catalog, dispute.subscriber, dispute.stream)
    if lapse is not None and lapse <= ctx.now:
        data["reason"] = (f"decisive default at level {level}: the legal basis of {dispute.subscriber}'s agreements "
                          f"on {dispute.stream} ended at {stamp(lapse)}, so nothing can be granted and the refusal "
                          "stands")
        return [new_event("defaulted", dispute.id, ctx.now, None, data)]
    period = dispute.scaled(rule.period)
    until = ctx.now + period if lapse is None else min(ctx.now + period, lapse)
    grant = grant_document(ctx, dispute, f"dispute-{dispute.id}", tier["fields"], dispute.sought.get("areas") or [],
                           until, other_fields=str(tier.get("other_fields", "drop")))
    grant["template"] = template_id
    data.update(outcome="granted-for-period", until=stamp(until), grant=grant, reason=(
        f"decisive default in a declared {level}: provisional grant of {template_id}'s minimised tier "
        f"'{tier['name']}' until {stamp(until)}, with mandatory review"))
    review = _review(ctx, dispute, "provisional-review", grant["id"], "review of a provisional grant by default")
    return [new_event("defaulted", dispute.id, ctx.now, None, data), *review]


def _unreviewed_break_glass(ctx: Context, dispute: Dispute) -> dict[str, Any]:
    """Nobody reviewed break-glass access in time: it is not confirmed, and ends at its expiry (`expired`)."""
    grant = ctx.state.grants.get(str(dispute.challenges.get("decision_id")))
    if grant is None:
        return {"outcome": "refused", "reason": "decisive default: no review in time; the access taken has ended"}
    until = str(grant["valid_until"])
    return {"outcome": "granted-for-period", "until": until,
            "reason": f"decisive default: no review in time, so the access taken is not extended and is revoked "
                      f"at its expiry {until}"}


def expired(ctx: Context) -> list[Event]:
    """Break-glass grants whose end has passed, each revoked on the live stream (whether or not it was reviewed:
    a review that keeps the access moves its end with granted-for-period)."""
    events = []
    for ident, grant in sorted(ctx.state.grants.items()):
        if ident.startswith(BREAK_GLASS_PREFIX) and parse_stamp(grant["valid_until"]) <= ctx.now:
            review = (grant.get("source") or {}).get("dispute")
            data = {"revoke_grants": [ident], "review": review, "expired_at": grant["valid_until"],
                    "reason": f"break-glass access {ident} reached its end {grant['valid_until']}"}
            events.append(new_event(BREAK_GLASS_EXPIRED, None, ctx.now, None, data))
    return events


def _minimised_tier(ctx: Context, dispute: Dispute) -> tuple[str, Mapping[str, Any]] | None:
    templates = ctx.catalog.get("templates", {})
    candidates = sorted(
        (t.get("purpose") != dispute.purpose, ident) for ident, t in templates.items()
        if t.get("stream") == dispute.stream and t.get("minimised_tier"))
    for _, ident in candidates:
        template = templates[ident]
        for tier in template.get("tiers", []):
            if tier.get("name") == template["minimised_tier"]:
                return ident, tier
    return None


def _review(ctx: Context, dispute: Dispute, kind: str, grant_id: str, why: str) -> list[Event]:
    ident = f"{dispute.id}-review"
    data = {"kind": kind, "stream": dispute.stream, "publisher": dispute.publisher,
            "subscriber": dispute.subscriber, "role": dispute.role, "purpose": dispute.purpose,
            "challenges": {"decision_id": grant_id, "policy_revision": None},
            "sought": dict(dispute.sought), "justification": why, "urgency": "urgent", "evidence": [],
            **({"time_scale": dispute.time_scale} if dispute.time_scale != 1 else {})}
    level = ctx.level_of(dispute.subscriber)
    deadline = ctx.now + dispute.scaled(ctx.ladder.tiers[0].deadline(level))
    return [new_event("raised", ident, ctx.now, dispute.challenger, data),
            _tier_opened(ident, ctx.now, 0, level, deadline, "mandatory review")]


def enforced(ctx: Context, dispute: Dispute, control: Sequence[Mapping[str, Any]]) -> list[Event]:
    """The decision is in force on the control topic; it stays open to appeal unless decided at the last tier."""
    last = dispute.tier >= ctx.ladder.last
    closes = ctx.now if last else ctx.now + dispute.scaled(ctx.ladder.appeal_window[dispute.level])
    events = [new_event("enforced", dispute.id, ctx.now, None, {"control": list(control), "closes_at": stamp(closes)})]
    if last:
        events.append(new_event("closed", dispute.id, ctx.now, None, {"why": "decided at the last tier"}))
    return events


def appeal(ctx: Context, ident: str, actor: Actor, reason: str) -> list[Event]:
    dispute = ctx.state.dispute(ident)
    ctx.check_actor(actor)
    if actor.body not in dispute.parties:
        raise NotAuthorisedError(f"only a party to dispute {ident} ({', '.join(sorted(dispute.parties))}) may appeal")
    if not reason.strip():
        raise GovernanceError("an appeal needs a written reason")
    if dispute.state != "enforced":
        raise GovernanceError(f"dispute {ident} is {dispute.state}; only a decided and enforced dispute is appealed")
    if dispute.closes_at is not None and dispute.closes_at <= ctx.now:
        raise GovernanceError(f"the appeal window of dispute {ident} closed at {stamp(dispute.closes_at)}")
    if dispute.tier >= ctx.ladder.last:
        raise GovernanceError(f"dispute {ident} was decided at the last tier; there is no appeal")
    nxt = dispute.tier + 1
    level = ctx.level_of(dispute.subscriber)
    deadline = ctx.now + dispute.scaled(ctx.ladder.tiers[nxt].deadline(level))
    return [new_event("appealed", ident, ctx.now, actor, {"reason": reason.strip()}),
            _tier_opened(ident, ctx.now, nxt, level, deadline, "appeal")]


def comment(ctx: Context, ident: str, actor: Actor, text: str) -> list[Event]:
    dispute = ctx.state.dispute(ident)
    ctx.check_actor(actor)
    deciders = {b for tier in ctx.ladder.tiers for b in tier.decider_bodies(dispute.publisher)}
    if actor.body not in dispute.parties | deciders:
        raise NotAuthorisedError(f"{actor.body} is neither a party to dispute {ident} nor one of its deciders")
    if not text.strip():
        raise GovernanceError("a comment needs text")
    next_state(dispute.state, "commented", ident)   # a closed dispute takes no comments; refuse before appending
    return [new_event("commented", ident, ctx.now, actor, {"text": text.strip()})]


def declare(ctx: Context, actor: Actor, scope: str, level: str, reason: str) -> list[Event]:
    """Declare (or, at `normal`, lift) a level nationally or for an E12 region; open deadlines shorten to fit. A drill
    declares for its drill body's own region (domain/drills.py), which no real body is in."""
    ctx.check_actor(actor)
    check_level(level)
    if not ctx.ladder.may_declare(actor):
        raise NotAuthorisedError(f"{actor.body} as {actor.role} may not declare or lift an emergency")
    if is_drill_region(scope):
        _check_drill_scope(ctx, scope, level)
    elif scope != NATIONAL and not _REGION.match(scope):
        raise GovernanceError(f"scope {scope!r} is neither 'national' nor an E12 region code such as E12000004")
    if not reason.strip():
        raise GovernanceError("a declaration needs a written reason")
    if level == "normal":
        return [new_event("emergency-lifted", None, ctx.now, actor, {"scope": scope, "reason": reason.strip()})]
    events = [new_event("emergency-declared", None, ctx.now, actor,
                        {"scope": scope, "level": level, "reason": reason.strip()})]
    return events + _shortened(ctx, scope, level)


def _check_drill_scope(ctx: Context, scope: str, level: str) -> None:
    """A drill body's own region takes a level only while drill bodies alone are in it (a lift always, so a drill
    that stopped half-way can still be cleaned up)."""
    bodies = sorted(ident for ident, body in (ctx.catalog.get("bodies") or {}).items()
                    if scope in (body.get("regions") or ()))
    if level == "normal":
        return
    if not bodies:
        raise GovernanceError(f"drill region {scope!r} is no body's region in the applied catalog; a drill declares "
                              "a level only where its drill body is")
    real = [ident for ident in bodies if not is_drill_body(ident)]
    if real:
        raise NotAuthorisedError(f"drill region {scope!r} holds bodies that are not drill bodies ({', '.join(real)})"
                                 "; a drill's level must reach no real body")


def _shortened(ctx: Context, scope: str, level: str) -> list[Event]:
    events = []
    for ident, dispute in sorted(ctx.state.disputes.items()):
        if dispute.state != "awaiting" or dispute.tier_opened_at is None or dispute.deadline is None:
            continue
        regions = (ctx.catalog.get("bodies", {}).get(dispute.subscriber) or {}).get("regions", [])
        if scope != NATIONAL and scope not in regions:
            continue
        # The tier gets the new level's deadline from the declaration, so a late declaration never makes older
        # disputes fall through to their defaults at once.
        sooner = ctx.now + dispute.scaled(ctx.ladder.tiers[dispute.tier].deadline(level))
        if sooner < dispute.deadline:
            data = {"level": level, "deadline": stamp(sooner), "why": f"{level} declared for {scope}"}
            events.append(new_event("deadline-changed", ident, ctx.now, None, data))
    return events


def break_glass(ctx: Context, actor: Actor, stream: str, purpose: str, justification: str, ident: str) -> list[Event]:
    """Immediate time-limited access for an authorised role in a declared emergency, reviewed after the fact."""
    ctx.check_actor(actor)
    glass = ctx.ladder.break_glass
    level = ctx.level_of(actor.body)
    if actor.role not in glass.roles or level not in glass.levels:
        raise NotAuthorisedError(
            f"break-glass needs role {' or '.join(sorted(glass.roles))} at level {' or '.join(sorted(glass.levels))}; "
            f"{actor.body} is at {level} and acts as {actor.role}")
    if not justification.strip():
        raise GovernanceError("break-glass needs a written justification; it is reviewed after the fact")
    _check_none_under_review(ctx, actor.body, stream)
    template_id, tier = _template_tier(ctx, stream, purpose, actor.role)
    publisher = str(ctx.stream(stream)["owner"])
    areas = list(ctx.body(actor.body).get("served_areas", []))
    data = {"kind": "break-glass-review", "stream": stream, "publisher": publisher, "subscriber": actor.body,
            "role": actor.role, "purpose": purpose, "challenges": {"decision_id": f"{BREAK_GLASS_PREFIX}{ident}"},
            "sought": {"fields": sorted(tier.get("fields", {})), "areas": areas, "until": None},
            "justification": justification.strip(), "urgency": "immediate", "evidence": []}
    raised = new_event("raised", ident, ctx.now, actor, data)
    dispute = fold(None, raised)  # the grant is built from the review dispute it opens
    until = ctx.now + glass.period
    grant = grant_document(ctx, dispute, f"{BREAK_GLASS_PREFIX}{ident}", tier.get("fields", {}), areas, until,
                           other_fields=str(tier.get("other_fields", "drop")))
    grant["template"] = template_id
    taken = new_event("break-glass", None, ctx.now, actor, {"grant": grant, "until": stamp(until), "review": ident})
    deadline = ctx.now + ctx.ladder.tiers[0].deadline(level)
    return [taken, raised, _tier_opened(ident, ctx.now, 0, level, deadline, "break-glass review")]


def _check_none_under_review(ctx: Context, body: str, stream: str) -> None:
    """One break-glass at a time per body and stream: a second waits until the first one's review is decided."""
    for review in sorted(ctx.state.disputes.values(), key=lambda d: d.raised_at):
        if review.kind == "break-glass-review" and (review.subscriber, review.stream) == (body, stream) \
                and review.is_open:
            raise GovernanceError(
                f"{body} already broke glass on {stream}: its review {review.id} is {review.state} at tier "
                f"{review.tier + 1}; a second break-glass waits until that review is decided (its access is in "
                "force meanwhile; add evidence with a comment on the review)")


def _template_tier(ctx: Context, stream: str, purpose: str, role: str) -> tuple[str, Mapping[str, Any]]:
    ctx.stream(stream)
    for ident, template in sorted(ctx.catalog.get("templates", {}).items()):
        if template.get("stream") != stream or template.get("purpose") != purpose:
            continue
        for tier in template.get("tiers", []):
            if role in tier.get("roles", []):
                return ident, tier
    raise GovernanceError(f"no template gives role {role!r} stream {stream} for purpose {purpose!r}; "
                          "break-glass takes a template's access, never more")

