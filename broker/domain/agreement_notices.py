"""An agreement's own dates as governance events: the subscriber (and publisher) told ahead that the legal basis ends
(`legal-basis-ending`, N days before, e.g. 14 and 3), and a review task raised when the review date comes
(`review-due`), closed by a governance officer (`review-completed`). Pure: the catalog, the state and the time in,
events out; the governance service appends them and its outbox sends the webhooks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from broker.domain.adjudication import Context
from broker.domain.disputes import parse_stamp, stamp
from broker.domain.flows import legal_basis_ends_at
from broker.domain.governance import (
    LEGAL_BASIS_ENDING,
    REVIEW_COMPLETED,
    REVIEW_DUE,
    GovernanceEvent,
    new_event,
)
from broker.domain.ladder import Actor
from broker.errors import GovernanceError, NotAuthorisedError

DEFAULT_NOTICE_DAYS: tuple[int, ...] = (14, 3)
# Who may close a review: the parties' information-governance leads, the governance board, the arbiter.
REVIEWER_ROLES = frozenset({"ig-lead", "governance-board", "arbiter"})


def parse_notice_days(text: str) -> tuple[int, ...]:
    """"14,3" → (14, 3): how many days before a legal basis ends its subscriber is told, largest first."""
    try:
        days = sorted({int(part) for part in text.split(",") if part.strip()}, reverse=True)
    except ValueError:
        raise ValueError(f"{text!r} is not a list of whole days, e.g. 14,3") from None
    if not days or days[-1] < 1:
        raise ValueError(f"{text!r}: give at least one number of days, each 1 or more, e.g. 14,3")
    return tuple(days)


def notice_schedule(ends_at: dt.datetime, days: Sequence[int]) -> list[tuple[int, dt.datetime]]:
    """Each notice (days before, when it is due), earliest first."""
    return [(n, ends_at - dt.timedelta(days=n)) for n in sorted(set(days), reverse=True)]


def notice_key(agreement: str, ends_at: dt.datetime, days: int) -> str:
    return f"{agreement}/{stamp(ends_at)}/{days}"


def _parties(agreement: Mapping[str, Any]) -> list[str]:
    return sorted({str(b) for b in (agreement.get("subscriber"), agreement.get("publisher")) if b})


def due_notices(ctx: Context, days: Sequence[int] = DEFAULT_NOTICE_DAYS) -> list[GovernanceEvent]:
    """One `legal-basis-ending` per agreement whose next notice is due and not sent. A service that was down past
    several notices sends only the most urgent one (it says how many days are left), never a stale 14-day notice
    after the 3-day one."""
    events = []
    for ident, agreement in sorted(ctx.catalog.get("agreements", {}).items()):
        ends_at = legal_basis_ends_at(agreement)
        if ends_at is None or ctx.now >= ends_at or ident in ctx.state.revocations:
            continue
        due = [n for n, at in notice_schedule(ends_at, days) if ctx.now >= at]
        if not due or notice_key(ident, ends_at, min(due)) in ctx.state.notices:
            continue
        events.append(new_event(LEGAL_BASIS_ENDING, None, ctx.now, None, {
            "agreement": ident, "stream": agreement.get("stream"), "subscriber": agreement.get("subscriber"),
            "publisher": agreement.get("publisher"), "legal_basis": list(agreement.get("legal_basis") or ()),
            "legal_basis_until": agreement["legal_basis_until"], "ends_at": stamp(ends_at), "days_before": min(due),
            "notices": [notice_key(ident, ends_at, n) for n in due],
            "message": f"the legal basis of agreement {ident} ends on {agreement['legal_basis_until']}; delivery "
                       f"stops at {stamp(ends_at)} unless a new basis is agreed",
            "told": _parties(agreement)}))
    return events


def review_task_id(agreement: str, review_date: str) -> str:
    return f"review-{agreement}-{review_date}"


def due_reviews(ctx: Context) -> list[GovernanceEvent]:
    """A `review-due` task for each agreement in force whose review date has come and has no task yet (an agreement
    that has ended needs no review; a new review date in a later catalog raises a new task)."""
    events = []
    for ident, agreement in sorted(ctx.catalog.get("agreements", {}).items()):
        review = agreement.get("review_date")
        if not review or ctx.now.date() < dt.date.fromisoformat(str(review)) or not _in_force(agreement, ctx.now):
            continue
        task = review_task_id(ident, str(review))
        if task in ctx.state.reviews:
            continue
        events.append(new_event(REVIEW_DUE, None, ctx.now, None, {
            "task": task, "agreement": ident, "stream": agreement.get("stream"),
            "subscriber": agreement.get("subscriber"), "publisher": agreement.get("publisher"),
            "review_date": str(review), "valid_until": agreement.get("valid_until"), "told": _parties(agreement)}))
    return events


def _in_force(agreement: Mapping[str, Any], now: dt.datetime) -> bool:
    try:
        return parse_stamp(agreement.get("valid_from")) <= now < parse_stamp(agreement.get("valid_until"))
    except (GovernanceError, ValueError):
        return False


def complete_review(ctx: Context, task: str, actor: Actor, note: str) -> list[GovernanceEvent]:
    """A party's IG lead, the governance board or the arbiter records that the review was done."""
    ctx.check_actor(actor)
    found = ctx.state.reviews.get(task)
    if found is None:
        raise GovernanceError(f"no review task {task!r}; GET /reviews lists them")
    if found["state"] != "open":
        raise GovernanceError(f"review task {task} was already completed")
    parties = set(_parties(found))
    if actor.role not in REVIEWER_ROLES or (actor.role == "ig-lead" and actor.body not in parties):
        raise NotAuthorisedError(f"a review of {found['agreement']} is completed by an IG lead of "
                                 f"{' or '.join(sorted(parties))}, the governance board or the arbiter")
    if not note.strip():
        raise GovernanceError("say what the review found (note)")
    return [new_event(REVIEW_COMPLETED, None, ctx.now, actor, {"task": task, "note": note, "told": sorted(parties)})]


def reviews_of(tasks: Iterable[Mapping[str, Any]], body: str | None = None, state: str | None = None
               ) -> list[dict[str, Any]]:
    """Review tasks (oldest review date first), those of `body` (a party) and in `state` when given."""
    found = [dict(t) for t in tasks if (body is None or body in _parties(t)) and (state is None or t["state"] == state)]
    return sorted(found, key=lambda t: (t["review_date"], t["task"]))
