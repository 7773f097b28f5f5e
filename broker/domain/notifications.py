"""Who is told of a governance event, and what they are told: the parties of its dispute or misroute (an access
request's body and reviewers), the deciders of the tier it waits at, the board of an overdue deletion, every body
of a declaration (of a drill's, its drill body alone), the parties of an agreement whose legal basis is ending or
whose review is due."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.domain.access_requests import PREFIX as REQUEST_PREFIX
from broker.domain.disputes import stamp
from broker.domain.drills import is_drill_region
from broker.domain.escalation import BREAK_GLASS_EXPIRED
from broker.domain.governance import (
    FINISHED,
    LEGAL_BASIS_ENDING,
    QUEUED,
    REVIEW_COMPLETED,
    REVIEW_DUE,
    GovernanceState,
)
from broker.domain.ladder import Ladder
from broker.domain.misroutes import OVERDUE, QUERY


def recipients(state: GovernanceState, event: Mapping[str, Any], catalog: Mapping[str, Any] | None) -> set[str]:
    """The bodies told of `event`, as of `state` just after it (`catalog`: the applied one, None before any)."""
    ident, data = event.get("dispute"), event.get("data") or {}
    ladder = None if catalog is None else Ladder.from_catalog(catalog)
    if event["type"] in (QUEUED, FINISHED):
        return set()
    if event["type"] in (QUERY, LEGAL_BASIS_ENDING, REVIEW_DUE, REVIEW_COMPLETED):
        return set(data.get("told") or ())
    if event["type"] == BREAK_GLASS_EXPIRED:
        ident = data.get("review")
    if str(event["type"]).startswith(REQUEST_PREFIX):
        return _request_recipients(state, data, ladder)
    if "misroute" in data:
        misroute = state.misroutes.get(str(data["misroute"]))
        board = set()
        if event["type"] == OVERDUE and ladder is not None:
            board = {b for tier in ladder.tiers for b in tier.bodies}
        return board | (set() if misroute is None else misroute.parties)
    if ident is None:
        return _told_of_level(event, catalog) if event["type"].startswith("emergency") else set()
    dispute = state.disputes.get(str(ident))
    if dispute is None:
        return set()
    bodies = set(dispute.parties)
    if dispute.state == "awaiting" and ladder is not None:
        bodies |= ladder.tiers[dispute.tier].decider_bodies(dispute.publisher)
    return bodies


def _told_of_level(event: Mapping[str, Any], catalog: Mapping[str, Any] | None) -> set[str]:
    """Every body is told of a declared level, but a drill's (for a drill body's own region): only its drill body."""
    bodies: Mapping[str, Any] = (catalog or {}).get("bodies", {})
    scope = (event.get("data") or {}).get("scope")
    if is_drill_region(scope):
        return {ident for ident, body in bodies.items() if scope in (body.get("regions") or ())}
    return set(bodies)


def _request_recipients(state: GovernanceState, data: Mapping[str, Any], ladder: Ladder | None) -> set[str]:
    """An access request's body, and while it waits the bodies reviewing it (the publisher, then the ladder's)."""
    request = state.requests.get(str(data.get("request")))
    if request is None:
        return set()
    bodies = {request.body}
    if request.state == "awaiting":
        if request.tier == 0 or ladder is None:
            bodies.add(request.publisher)
        else:
            bodies |= ladder.tiers[request.tier].decider_bodies(request.publisher) - {request.body, request.publisher}
    return bodies


def notification(state: GovernanceState, event: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook body for `event`: the event itself and where its dispute stands."""
    ident = event.get("dispute")
    dispute = None if ident is None else state.disputes.get(str(ident))
    summary = None if dispute is None else {
        "id": dispute.id, "state": dispute.state, "tier": dispute.tier, "deadline": stamp(dispute.deadline),
        "stream": dispute.stream, "subscriber": dispute.subscriber}
    data = event.get("data") or {}
    request = state.requests.get(str(data.get("request"))) if str(event["type"]).startswith(REQUEST_PREFIX) else None
    answer = {"event_id": event["event_id"], "type": event["type"], "at": event["at"], "event": dict(event),
              "dispute": summary}
    if request is not None:
        answer["request"] = {"id": request.id, "state": request.state, "tier": request.tier,
                             "deadline": stamp(request.deadline), "template": request.template, "body": request.body}
    return answer
