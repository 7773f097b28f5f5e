"""A gate worker's identity: one per slot of its consumer group, kept across restarts.

The transactional id is what Kafka fences on. Were it new at every start (it once held the process id), a worker
killed mid-transaction would leave that transaction open until the coordinator timed it out, holding back every
later record of its partitions from read_committed readers. With one id per slot, the worker restarted (or
replaced, on any machine) in the slot calls `init_transactions` with the same id, and the broker aborts the dead
one's transaction at once. Two live workers given the same slot fence each other by design: the newer one writes,
the older one is fenced and stops (README, "Gate workers").
"""

from __future__ import annotations

import re

from broker.errors import ConfigError

_SLOT_WORKER = re.compile(r"[A-Za-z0-9._-]+")


def slot_worker_id(group: str, slot: int) -> str:
    """The worker (and its transactional id) of `slot` in consumer group `group`: `<group>-<slot>`."""
    if slot < 0:
        raise ConfigError(f"a gate worker slot is a number from 0 (ACCORD_GATE_SLOT or --slot), not {slot}")
    if not _SLOT_WORKER.fullmatch(group):
        raise ConfigError(f"gate group {group!r} (ACCORD_GATE_GROUP) may hold only letters, digits, '.', '_' and '-'")
    return f"{group}-{slot}"


def gate_transactional_id(group: str, slot: int, worker_id: str | None = None) -> str:
    """The transactional id of a gate worker: `<group>-<slot>`, or `accord-gate-<worker id>` for a worker the
    operator names itself (ACCORD_GATE_WORKER_ID, --worker-id), which is then as stable as that name."""
    if worker_id:
        return f"accord-gate-{worker_id}"
    return slot_worker_id(group, slot)
