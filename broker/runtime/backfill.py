"""History on a new grant as an operator sees it: every replay's progress, folded from the backfill topic."""

from __future__ import annotations

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_history import BackfillLogReader
from broker.domain.backfill import BackfillLog, Replay


def replays(kafka: KafkaAccess) -> list[Replay]:
    """Each (grant, delivery topic) asking for history, sorted; empty when no grant ever did."""
    reader = BackfillLogReader(kafka, client_id="accord-backfill-status")
    try:
        folded = BackfillLog()
        folded.apply_all(reader.read_new())
    finally:
        reader.close()
    return [folded.replays[key] for key in sorted(folded.replays)]
