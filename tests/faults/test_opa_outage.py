"""OPA killed and kept down for 30 s while records keep arriving: nothing is delivered outside a plan, the backlog
is delivered once OPA is back (started again by the supervisor), and the API, never restarted, serves again."""

from __future__ import annotations

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
    delivered,
    encoded,
    outside_plans,
    produce,
    publish_http,
    specimen_day,
    wait_all_delivered,
    wait_for,
)

DOWN_S = 30


def _api_ready(stack: FaultStack) -> bool:
    try:
        return httpx.get(f"{stack.endpoints.api_url}/ready", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def test_opa_down_for_30_s_delivers_nothing_outside_a_plan_and_the_stack_recovers_by_itself(
        stack: FaultStack, figure: Callable[..., None]) -> None:
    prefix = f"O{uuid.uuid4().hex[:6].upper()}"
    before, during, after = (spread(specimen_day(), n, list(COUNCILS), prefix=f"{prefix}{part}")
                             for part, n in (("A", 50), ("B", 500), ("C", 50)))
    api_pid = stack.pid("api")
    answered = publish_http(stack, before)
    assert answered.status_code == 200 and answered.json()["accepted"] == len(before), answered.text
    wait_all_delivered(stack, f"{prefix}A", {c["specimen_id"] for c in before})

    sent_while_down = encoded(stack, during)
    held = stack.accord("local", "hold", "opa", "--seconds", str(DOWN_S))
    assert held.returncode == 0, held.stdout + held.stderr
    pid, killed = stack.kill("opa")
    # While OPA is down: the API refuses to publish (it cannot authorise), and records still reach the ingest
    # topic from a publisher's own Kafka client (Kafka's ACLs do not ask OPA).
    refused = publish_http(stack, after[:1])
    produce(stack, sent_while_down)
    wait_for(lambda: not _api_ready(stack), "the API to say it is not ready without OPA", timeout_s=60)
    time.sleep(max(0.0, killed + DOWN_S - 2 - time.monotonic()))
    during_outage = delivered(stack, f"{prefix}B", DPH_TOPICS)
    back = stack.restarted("opa", pid)
    backlog = {c["specimen_id"] for c in during}
    backlog_done = wait_for(lambda: backlog <= {s for s, _ in delivered(stack, f"{prefix}B", DPH_TOPICS)},
                            "the backlog to be delivered", every_s=0.5)
    ready = wait_for(lambda: _api_ready(stack), "the API to be ready again by itself")
    answered = publish_http(stack, after)
    serving = time.monotonic()
    assert answered.status_code == 200 and answered.json()["accepted"] == len(after), answered.text
    want = {c["specimen_id"] for c in (*before, *during, *after)}
    deliveries = wait_all_delivered(stack, prefix, want)
    counts = Counter(s for s, topic in deliveries if topic in DPH_TOPICS)
    outside = outside_plans(deliveries)
    lost = sorted(want - set(counts))
    duplicated = sorted(s for s, n in counts.items() if n > 1)
    figure(opa_down_s=round(back - killed, 1), api_answer_while_down=refused.status_code,
           delivered_while_down=len(during_outage), outside_a_plan=len(outside), backlog=len(during),
           backlog_delivered_after_opa_back_s=round(backlog_done - back, 1),
           api_ready_after_opa_back_s=round(ready - back, 1), api_serving_after_opa_back_s=round(serving - back, 1),
           api_restarted=stack.pid("api") != api_pid, lost=len(lost), duplicated=len(duplicated))
    assert outside == [], outside[:3]
    assert lost == [] and duplicated == [], (lost[:3], duplicated[:3])
    assert refused.status_code != 200, refused.text
    assert stack.pid("api") == api_pid, "the API was restarted"
