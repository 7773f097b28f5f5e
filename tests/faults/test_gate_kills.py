"""kill -9 of the stack's gate worker ten times in one run, with records flowing: the supervisor starts it again
in its slot each time (fencing the dead one's open transaction), and every record is delivered exactly once."""

from __future__ import annotations

import random
import statistics
import threading
import uuid
from collections import Counter
from collections.abc import Callable

from broker.config import Settings
from broker.demo.steady_publisher import publish_steadily
from broker.demo.synthetic import spread
from tests.faults.support import (
    COUNCILS,
    DPH_TOPICS,
    HEALTHY_S,
    FaultStack,
    FirstDelivery,
    committed_ends,
    outside_plans,
    specimen_day,
    wait_all_delivered,
    wait_for,
)
from tests.integration.gate_support import T1

KILLS = 10


def _wait_delivering(stack: FaultStack) -> None:
    before = committed_ends(stack, DPH_TOPICS)
    wait_for(lambda: committed_ends(stack, DPH_TOPICS) > before, "the gate worker to deliver")


def test_ten_kills_of_the_gate_worker_lose_and_duplicate_nothing(stack: FaultStack,
                                                                 figure: Callable[..., None]) -> None:
    prefix = f"G{uuid.uuid4().hex[:6].upper()}"
    cases = spread(specimen_day(), 40_000, list(COUNCILS), prefix=prefix)
    random.Random(19).shuffle(cases)  # every council, so every ingest partition, carries traffic all along
    sent: dict[str, float] = {}
    stop = threading.Event()
    publisher = threading.Thread(target=publish_steadily, daemon=True, kwargs={
        "settings": Settings(), "kafka": stack.kafka, "registry_url": stack.endpoints.registry_url, "stream": T1,
        "records": cases, "pause_s": 0.02, "key_field": "ltla", "sent_at": sent, "stop": stop,
        "client_id": "faults-gate-publisher"})
    # (The restart time is until the new process runs; the stall until it has delivered: start-up, joining the
    # group, fencing the dead one's transaction in its slot.)
    restarts_before = int(stack.supervisor_state().get("services", {}).get("gate", {}).get("restarts", 0))
    stalls: list[float] = []
    restarts: list[float] = []
    publisher.start()
    try:
        for _ in range(KILLS):
            # Up long enough to be forgiven its last crash (so each restart is at once), and delivering.
            wait_for(lambda: stack.supervisor_state().get("services", {}).get("gate", {}).get("failures") == 0,
                     f"the supervisor to forgive the gate worker after {HEALTHY_S} s up")
            _wait_delivering(stack)
            pid, killed = stack.kill("gate")
            first = FirstDelivery(stack, DPH_TOPICS)
            restarted = stack.restarted("gate", pid)
            delivering = first.wait()
            restarts.append(round(restarted - killed, 1))
            stalls.append(round(delivering - killed, 1))
            figure(kill=len(stalls), killed_pid=pid, restarted_after_s=restarts[-1], stall_s=stalls[-1],
                   records_sent_so_far=len(sent))
    finally:
        stop.set()
        publisher.join(timeout=60)
    deliveries = wait_all_delivered(stack, prefix, set(sent))
    dph = [(s, t) for s, t in deliveries if t in DPH_TOPICS]
    counts = Counter(s for s, _ in dph)
    duplicated = sorted(s for s, n in counts.items() if n > 1)
    lost = sorted(set(sent) - set(counts))
    outside = outside_plans(deliveries)
    restarted = int(stack.supervisor_state()["services"]["gate"]["restarts"]) - restarts_before
    figure(kills=KILLS, records=len(sent), delivered_once=sum(1 for n in counts.values() if n == 1),
           lost=len(lost), duplicated=len(duplicated), outside_a_plan=len(outside), supervisor_restarts=restarted,
           stall_s=stalls, stall_median_s=round(statistics.median(stalls), 1), stall_max_s=max(stalls),
           restart_s=restarts)
    assert lost == [], f"{len(lost)} of {len(sent)} lost, e.g. {lost[:3]}"
    assert duplicated == [], f"{len(duplicated)} duplicated, e.g. {duplicated[:3]}"
    assert outside == [], outside[:3]
    assert restarted == KILLS
