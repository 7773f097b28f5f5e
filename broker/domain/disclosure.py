"""Who may read a dispute in full. A dispute carries a body's purpose and justification (a police force's reason to
want isolation records, say), so only those with a stake or a duty read it: its parties, the deciders of every tier
of its ladder, and auditors. Every other member sees at most its outcome."""

from __future__ import annotations

from typing import Any

from broker.domain.disputes import Dispute, stamp
from broker.domain.ladder import Actor, Ladder

AUDITOR_ROLE = "auditor"


def reads_in_full(ladder: Ladder, dispute: Dispute, actor: Actor) -> bool:
    """Whether `actor` (whose role the catalog has already confirmed) sees `dispute` in full."""
    if actor.body in dispute.parties or actor.role == AUDITOR_ROLE:
        return True
    # Every tier, not only the current one: a dispute may climb (or be appealed) to any of them.
    return any(actor.body in tier.decider_bodies(dispute.publisher) and actor.role in tier.roles
               for tier in ladder.tiers)


def outcome_summary(dispute: Dispute) -> dict[str, Any]:
    """What any member may know of a dispute: that it exists, over which stream, where it stands, how it ended."""
    return {"id": dispute.id, "stream": dispute.stream, "state": dispute.state,
            "outcome": None if dispute.decision is None else dispute.decision.get("outcome"),
            "raised_at": stamp(dispute.raised_at), "decided_at": stamp(dispute.decided_at), "summary": True}
