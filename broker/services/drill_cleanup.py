"""After a drill: delete the Kafka topics its drill streams and drill bodies left (ingest, quarantine and delivery
topics), once the catalog in force names none of its streams and the gates have applied it, so that no gate worker
still routes to a topic when it goes (the brokers create no topic by themselves, so a worker producing to a deleted one
would fail its transaction, not bring it back). Only names provably the run's are deleted (domain/drill_topics.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from broker.domain.drill_topics import run_topics
from broker.errors import AccordError
from broker.services.drill_flows import AppliedCatalog

# How long the gates may take to apply the catalog restored after the drill (they apply a change within a second).
GATES_APPLIED_S = 30.0


class DrillTopics(Protocol):
    """The deployment's Kafka topics, as the drill's operator manages them."""

    def names(self) -> set[str]:
        """Every topic of the cluster now."""

    def gates_applied(self, timeout_s: float) -> bool:
        """Whether a gate worker reported applying every control record written so far, within `timeout_s`."""

    def delete(self, names: Sequence[str]) -> dict[str, str]:
        """Delete the topics `names`; why, for each one that was not deleted."""


def remove_topics(topics: DrillTopics, catalog: AppliedCatalog, run: str, streams: Sequence[str]) -> list[str]:
    """Delete the topics of drill run `run` (its drill `streams`, and its drill bodies' deliveries of them); what
    was left, and why, for the run's problems. Nothing is deleted while the catalog in force names one of them."""
    if not streams:
        return []
    left = ", ".join(sorted(streams))
    try:
        named = set((catalog.current() or {}).get("streams") or {}) & set(streams)
        if named:
            return [f"the topics of drill streams {left} were not deleted: the catalog in force still names "
                    f"{', '.join(sorted(named))}; apply the catalog, then delete them"]
        if not topics.gates_applied(GATES_APPLIED_S):
            return [f"the topics of drill streams {left} were not deleted: no gate worker reported applying the "
                    f"catalog without them within {GATES_APPLIED_S:g} s; delete them once the gates have"]
        doomed = run_topics(topics.names(), run, streams)
        failed = topics.delete(doomed) if doomed else {}
    except AccordError as exc:
        return [f"the topics of drill streams {left} were not deleted ({exc}); delete those of drill run {run}"]
    return [f"topic {name} of drill run {run} was not deleted ({why}); delete it" for name, why in sorted(
        failed.items())]
