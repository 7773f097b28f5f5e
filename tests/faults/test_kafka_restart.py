"""kill -9 of the single Kafka broker while a publisher posts to the API: the supervisor starts it again on its
port, every service is ready again without anyone touching it, and every record the API acknowledged is
delivered once."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import httpx

from broker.demo.synthetic import spread
from tests.faults.support import (
    COUNCILS,
    DPH_TOPICS,
    FaultStack,
    outside_plans,
    publish_http,
    specimen_day,
    wait_all_delivered,
    wait_for,
)

BATCH = 10


class _Publisher(threading.Thread):
    """Posts batches of records to the API until stopped; keeps those acknowledged (200, every record accepted)
    and when each answer came."""

    def __init__(self, stack: FaultStack, prefix: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.stop = stack, threading.Event()
        self.cases = spread(specimen_day(), 20_000, list(COUNCILS), prefix=prefix)
        self.acknowledged: set[str] = set()
        self.acknowledged_at: list[float] = []
        self.refused: list[float] = []
        self.answers: Counter[str] = Counter()  # HTTP status (or the transport error) of each post

    def run(self) -> None:
        for start in range(0, len(self.cases), BATCH):
            if self.stop.is_set():
                return
            batch = self.cases[start:start + BATCH]
            try:
                answer = publish_http(self.stack, batch, timeout_s=15)
                ok = answer.status_code == 200 and answer.json()["accepted"] == len(batch)
                self.answers[str(answer.status_code)] += 1
            except httpx.TransportError as exc:
                ok = False
                self.answers[type(exc).__name__] += 1
            if ok:
                self.acknowledged |= {c["specimen_id"] for c in batch}
                self.acknowledged_at.append(time.monotonic())
            else:
                self.refused.append(time.monotonic())
            time.sleep(0.2)


def test_a_killed_kafka_comes_back_by_itself_and_nothing_acknowledged_is_lost(
        stack: FaultStack, figure: Callable[..., None]) -> None:
    prefix = f"K{uuid.uuid4().hex[:6].upper()}"
    publisher = _Publisher(stack, prefix)
    publisher.start()
    try:
        wait_for(lambda: len(publisher.acknowledged) >= 20 * BATCH, "the API to acknowledge records")
        acknowledged_before = len(publisher.acknowledged)
        restarts = int(stack.supervisor_state().get("services", {}).get("kafka", {}).get("restarts", 0))
        pid, killed = stack.kill("kafka")
        back = stack.restarted("kafka", pid)
        # the supervisor counts a restart once the broker answers its admin
        answering = wait_for(lambda: stack.supervisor_state()["services"]["kafka"]["restarts"] > restarts,
                             "the restarted Kafka to answer", every_s=0.5)
        serving = wait_for(lambda: any(at > back for at in publisher.acknowledged_at),
                           "the API to acknowledge a record again", every_s=0.5)
        ready = wait_for(stack.all_ready, "every service to be ready again", every_s=1.0)
        time.sleep(5.0)  # records acknowledged after the recovery too
    finally:
        publisher.stop.set()
        publisher.join(timeout=60)
    _, states = stack.status()
    deliveries = wait_all_delivered(stack, prefix, set(publisher.acknowledged))
    counts = Counter(s for s, topic in deliveries if topic in DPH_TOPICS)
    lost = sorted(publisher.acknowledged - set(counts))
    duplicated = sorted(s for s, n in counts.items() if n > 1)
    outside = outside_plans(deliveries)
    figure(kafka_process_after_s=round(back - killed, 1), kafka_answering_after_s=round(answering - killed, 1),
           api_acknowledging_again_after_kill_s=round(serving - killed, 1),
           all_ready_after_kill_s=round(ready - killed, 1), acknowledged=len(publisher.acknowledged),
           acknowledged_before_kill=acknowledged_before, refused_batches=len(publisher.refused),
           lost=len(lost), duplicated=len(duplicated), outside_a_plan=len(outside),
           answers=dict(publisher.answers),
           restarts={name: s["restarts"] for name, s in states.items() if s["restarts"]})
    assert lost == [], f"{len(lost)} of {len(publisher.acknowledged)} acknowledged records lost, e.g. {lost[:3]}"
    assert duplicated == [] and outside == [], (duplicated[:3], outside[:3])
    # Refused while Kafka was away, as unavailable (retry), never as a server error.
    assert set(publisher.answers) <= {"200", "503", "ReadTimeout"}, publisher.answers
