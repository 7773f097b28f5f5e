"""Misrouting commands: telling councils of rows the gate could not place, reports of rows delivered to the wrong
council, the recipient's confirmation that it deleted them, and the deadline for that (see misroutes.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.domain.adjudication import Context
from broker.domain.disputes import parse_stamp
from broker.domain.governance import GovernanceEvent, new_event
from broker.domain.ladder import Actor
from broker.domain.misroutes import CONFIRMED, OVERDUE, QUERY, REPORTED, UNRESOLVED, fold
from broker.errors import GovernanceError, NotAuthorisedError

Event = GovernanceEvent


def subscribers_serving(ctx: Context, stream: str, areas: Sequence[str]) -> list[str]:
    """Bodies with an agreement or grant on `stream` in force that serve one of `areas`: the councils a row could be
    for (a council whose agreement has expired no longer receives the stream, so it is not told about its rows)."""
    flows = [*ctx.catalog.get("agreements", {}).values(), *ctx.state.grants.values()]
    subscribers = {str(flow["subscriber"]) for flow in flows if flow.get("stream") == stream and _in_force(flow, ctx)}
    bodies = ctx.catalog.get("bodies", {})
    return sorted(b for b in subscribers if set(bodies.get(b, {}).get("served_areas", ())) & set(areas))


def _in_force(flow: Mapping[str, Any], ctx: Context) -> bool:
    try:
        return parse_stamp(flow.get("valid_from")) <= ctx.now < parse_stamp(flow.get("valid_until"))
    except (GovernanceError, ValueError):
        return False    # a flow whose period cannot be read delivers nothing (the policy refuses it too)


def jurisdiction_queries(ctx: Context, entries: Sequence[Mapping[str, Any]]) -> list[Event]:
    """One `jurisdiction-query` per quarantined row the gate could not place; each entry carries `position`
    (`{topic, partition, offset}` in the quarantine topic), so a restarted service reads on from the last one."""
    events = []
    for entry in entries:
        try:
            reasons = list(entry.get("reasons") or [{}])
            if reasons[0].get("rule") != UNRESOLVED or entry["source"].get("kind") != "gate":
                continue
        except (AttributeError, KeyError, TypeError):
            continue    # not an entry Accord wrote: the quarantine topic keeps it, it tells no one
        stream = str(entry.get("stream", ""))
        candidates = [str(code) for code in entry.get("candidates") or ()]
        publisher = ctx.catalog.get("streams", {}).get(stream, {}).get("owner")
        told = subscribers_serving(ctx, stream, candidates)
        events.append(new_event(QUERY, None, ctx.now, None, {
            "stream": stream, "publisher": publisher, "position": dict(entry["position"]),
            "source": dict(entry["source"]), "reason": reasons[0].get("message", ""), "candidates": candidates,
            "told": sorted({*told, *([publisher] if publisher else [])})}))
    return events


@dataclass(frozen=True)
class MisrouteReport:
    """Who received a row that is not theirs: `source` is the row's place on the ingest topic."""

    stream: str
    recipient: str
    belongs_to: str
    source: Mapping[str, Any]
    reason: str


def report(ctx: Context, actor: Actor, ident: str, request: MisrouteReport) -> list[Event]:
    ctx.check_actor(actor)
    stream = ctx.stream(request.stream)
    ctx.body(request.recipient)
    publisher = str(stream["owner"])
    if actor.body not in (publisher, request.recipient):
        raise NotAuthorisedError(f"{actor.body} may not report a misrouting of {request.stream}: only the publisher "
                                 f"{publisher} or the recipient {request.recipient} may")
    if not request.reason.strip():
        raise GovernanceError("a misrouting report needs a reason: say how the row was found to be misrouted")
    if set(ctx.body(request.recipient).get("served_areas", ())) & {request.belongs_to}:
        raise GovernanceError(f"{request.recipient} serves {request.belongs_to}: the row is not misrouted")
    if not {"topic", "partition", "offset"} <= set(request.source):
        raise GovernanceError("source must name the row's topic, partition and offset (its accord.source header)")
    deadline = ctx.now + ctx.ladder.deletion_deadline[ctx.level_of(request.recipient)]
    return [new_event(REPORTED, None, ctx.now, actor, {
        "misroute": ident, "stream": request.stream, "publisher": publisher, "recipient": request.recipient,
        "belongs_to": request.belongs_to, "rightful": subscribers_serving(ctx, request.stream, [request.belongs_to]),
        "source": dict(request.source), "reason": request.reason, "deadline": deadline.isoformat()})]


def confirm_deletion(ctx: Context, ident: str, actor: Actor, statement: str) -> list[Event]:
    misroute = ctx.state.misroute(ident)
    ctx.check_actor(actor)
    if actor.body != misroute.recipient:
        raise NotAuthorisedError(f"only the recipient {misroute.recipient} can confirm it deleted the row")
    if not statement.strip():
        raise GovernanceError("a deletion confirmation needs a statement: what was deleted, where, by whom")
    event = new_event(CONFIRMED, None, ctx.now, actor, {"misroute": ident, "statement": statement})
    fold(misroute, event)  # raises when the row is already confirmed deleted
    return [event]


def overdue(ctx: Context) -> list[Event]:
    """`deletion-overdue` for each misroute whose recipient has not confirmed deletion by its deadline."""
    return [new_event(OVERDUE, None, ctx.now, None, {"misroute": m.id, "deadline": m.deadline.isoformat()})
            for m in sorted(ctx.state.misroutes.values(), key=lambda m: m.id)
            if m.state == "awaiting-deletion" and m.deadline <= ctx.now]
