"""The console's public transparency figures are those of the governance log: disputes raised and decided by the
real governance service (on a topic of this test's own, by a clock the test moves) are published by the console as
JSON, CSV and HTML, and equal what this test counts from the topic's raw records by folding them itself."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import uuid
from secrets import token_bytes
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from starlette.testclient import TestClient

from broker.adapters.kafka_access import KafkaAccess
from broker.api.console.app import create_console_app
from broker.config import Settings
from broker.domain.adjudication import Decision, DisputeRequest
from broker.domain.audit import new_signing_key
from broker.domain.governance import GovernanceState, apply
from broker.domain.ladder import Actor
from broker.local.stack import Endpoints
from broker.runtime.console import open_console
from tests.conftest import SCHEMAS, governance_service
from tests.e2e.scenario_support import FakeClock
from tests.integration.gate_support import T1

EHO = Actor("blaby-district-council", "environmental-health", "Head of Environmental Health")
IG_LEAD = Actor("ukhsa", "ig-lead", "UKHSA IG lead")
BOARD = Actor("dhsc", "governance-board", "DHSC board member")
HOURS_TO_DECIDE = (5, 1, 3)


def _raise(governance: Any) -> str:
    return str(governance.raise_dispute(EHO, DisputeRequest(
        kind="refusal", stream=T1, role="environmental-health", purpose="outbreak-control", fields=("lsoa",),
        justification="Cases linked to a food premises.")).id)


def _make_history(services: Endpoints, topic: str) -> None:
    run = topic.rsplit("-", 1)[-1]
    clock = FakeClock.hours_ago(24)
    service = governance_service(services, audit_key=new_signing_key(), schemas_dir=SCHEMAS,
                                 webhook_secret=token_bytes(32), clock=clock, tick_s=3600.0,
                                 transactional_id=f"console-governance-{run}", topic=topic,
                                 audit_topic=f"_accord.audit.console-{run}").start()
    try:
        gov = service.governance
        for hours in HOURS_TO_DECIDE:
            ident = _raise(gov)
            clock.advance(hours=hours)
            gov.decide(ident, IG_LEAD, Decision("refused", "The county DPH leads outbreak control."))
        _raise(gov)                                           # still open
        gov.declare(BOARD, "national", "enhanced", "Exercise: enhanced response")
        clock.advance(minutes=30)
        gov.declare(BOARD, "national", "normal", "Exercise over")
    finally:
        service.stop()


def _raw_events(kafka: KafkaAccess, topic: str) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False,
                             isolation_level="read_committed")
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        events: list[dict[str, Any]] = []
        while consumer.position(tp) < end:
            for batch in consumer.poll(timeout_ms=500).values():
                events.extend(json.loads(m.value) for m in batch if m.value is not None)
        return events
    finally:
        consumer.close()


def _counted(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures by another road: the governance service's own fold of the log into disputes, then each
    dispute's raised-to-decided time (none of these disputes was appealed)."""
    state = GovernanceState()
    for offset, event in enumerate(events):
        state = apply(state, offset, event)
    disputes = list(state.disputes.values())
    seconds = sorted((d.decided_at - d.raised_at).total_seconds() for d in disputes if d.decided_at is not None)
    return {"raised": len(disputes),
            "decided": sum(1 for d in disputes if d.decision is not None),
            "refused": sum(1 for d in disputes if (d.decision or {}).get("outcome") == "refused"),
            "open": sum(1 for d in disputes if d.decision is None),
            "median": statistics.median_low(seconds), "p90": seconds[math.ceil(0.9 * len(seconds)) - 1],
            "declared": sum(1 for e in events if e["type"] == "emergency-declared"),
            "lifted": sum(1 for e in events if e["type"] == "emergency-lifted"),
            "break_glass": sum(1 for e in events if e["type"] == "break-glass")}


def test_the_published_figures_equal_those_counted_from_the_log(services: Endpoints,
                                                                applied_catalog: dict[str, Any]) -> None:
    topic = f"_accord.governance.console-{uuid.uuid4().hex[:8]}"
    _make_history(services, topic)
    settings = Settings(opa_url=services.opa_url, registry_url=services.registry_url,
                        governance_url="http://127.0.0.1:9")   # no governance call is made by the public pages
    with open_console(settings, services.kafka, governance_topic=topic) as console, \
            TestClient(create_console_app(console)) as client:
        published = client.get("/transparency.json").json()
        table = {(row["section"], row["measure"]): row["value"]
                 for row in csv.DictReader(io.StringIO(client.get("/transparency.csv").text))}
        page = client.get("/transparency").text

    counted = _counted(_raw_events(services.kafka, topic))
    assert counted == {"raised": 4, "decided": 3, "refused": 3, "open": 1, "median": 3 * 3600.0,
                       "p90": 5 * 3600.0, "declared": 1, "lifted": 1, "break_glass": 0}
    assert published["disputes"]["raised"] == counted["raised"]
    assert published["disputes"]["by_outcome"] == {"open": counted["open"], "refused": counted["refused"]}
    assert published["decisions"]["total"] == counted["decided"]
    assert published["decisions"]["by_outcome"] == {"refused": counted["refused"]}
    assert published["decisions"]["median_time_to_decision_s"] == counted["median"]
    assert published["decisions"]["p90_time_to_decision_s"] == counted["p90"]
    assert published["emergency"] == {"declarations": counted["declared"], "declarations_by_level": {"enhanced": 1},
                                      "lifts": counted["lifted"]}
    assert published["break_glass"] == {"uses": counted["break_glass"]}
    assert table[("decisions", "median time to decision (s)")] == "10800"
    assert table[("decisions", "p90 time to decision (s)")] == "18000"
    assert table[("disputes", "raised")] == "4"
    assert "18000" in page and "10800" in page
    # Aggregate only: no body, person, purpose or justification reaches the public page.
    for private in ("blaby", "ukhsa", "dhsc", "IG lead", "outbreak-control", "food premises", "Exercise"):
        assert private not in json.dumps(published) and private not in page
