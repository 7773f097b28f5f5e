"""The dispute part of `make demo`: a district's refused request climbs the ladder over the governance HTTP API,
is granted in part by two board members on appeal, and the grant is enforced on the live stream."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from broker.adapters.governance_http import GovernanceClient
from broker.adapters.kafka_log import KafkaLog
from broker.clock import system_clock
from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.domain.disputes import parse_stamp
from broker.domain.topics import delivery_topic
from broker.local.stack import Endpoints
from broker.runtime.api import open_ingest
from broker.runtime.deliveries import RoleReaders, ends_now
from broker.security import api_tokens
from broker.services import policy_changes

STREAM = "ukhsa.positive-tests"
BLABY = "blaby-district-council"
Say = Callable[[str], None]


def run(endpoints: Endpoints, readers: RoleReaders, log: KafkaLog, say: Say, settings: Settings) -> dict[str, Any]:
    """Blaby's environmental health team wants T1 rows for a food-premises cluster (domain scenario 5)."""
    key = api_tokens.signing_key(settings.secrets_dir)

    def _as(body: str, role: str, person: str) -> str:
        # Each player's own short-lived token, as `accord credentials token` would issue it.
        return api_tokens.issue(key, body, role, person, dt.timedelta(minutes=15), system_clock())

    reader_headers = _as("accord", "service", "demo")
    with GovernanceClient(endpoints.governance_url) as api:
        started = time.monotonic()
        dispute = api.call("POST", "/disputes", _as(BLABY, "environmental-health", "Head of Environmental Health"),
                        {"kind": "refusal", "stream": STREAM, "role": "environmental-health",
                         "purpose": "outbreak-control", "fields": ["lsoa", "specimen_date", "occupation", "postcode"],
                         "justification": "Outbreak OB-2026-031: cases linked to a food premises in Blaby.",
                         "urgency": "urgent", "decision_id": "no-agreement"})
        ident = dispute["id"]
        say(f"5. dispute {ident}: Blaby's environmental health team is refused T1 rows for outbreak OB-2026-031 "
            f"and disputes it; tier 1 ({dispute['level']} level) is due by {dispute['deadline']}")
        api.call("POST", f"/disputes/{ident}/decision", _as("ukhsa", "ig-lead", "UKHSA IG Lead"),
              {"outcome": "refused", "reason": "The county DPH leads outbreak control; no district feed."})
        api.call("POST", f"/disputes/{ident}/appeal", _as(BLABY, "environmental-health", "Head of EH"),
              {"reason": "Premises inspections are a district duty; we need the cases linked to the premises."})
        until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=28)).strftime("%Y-%m-%dT%H:%M:%SZ")
        part = {"outcome": "granted-in-part", "fields": ["lsoa", "specimen_date", "occupation"],
                "until": until, "reason": "Outbreak OB-2026-031: Blaby's rows only, no postcode, for 28 days."}
        api.call("POST", f"/disputes/{ident}/approvals", _as("dhsc", "governance-board", "Board member (DHSC)"), part)
        decided_wall = time.time()
        nhse = _as("nhse", "governance-board", "Board member (NHSE)")
        api.call("POST", f"/disputes/{ident}/approvals", nhse, part)
        full = api.call("GET", f"/disputes/{ident}", reader_headers)
    for line in _timeline(full):
        say(f"   {line}")
    enforced = next(e for e in reversed(full["timeline"]) if e["type"] == "enforced")
    last = max(enforced["data"]["control"], key=lambda c: int(c["offset"]))
    change = policy_changes.Announced(last["key"], int(last["offset"]), int(last["timestamp_ms"]))
    (status,) = policy_changes.enforcement(log, change, workers=1, timeout_s=10)
    latency_ms = int(status["applied_ms"]) - int(decided_wall * 1000)
    flow = _deliveries(endpoints, settings, readers)
    say(f"   decision enforced by gate worker {status['worker']} {latency_ms} ms after the second approval was sent")
    say(f"   then Blaby's environmental health received {flow['rows']} of {flow['published']} new rows (Blaby's only), "
        f"fields {', '.join(flow['fields'])}")
    outcome = (full.get("decision") or {}).get("outcome")
    return {"decision_to_enforced_ms": latency_ms, "dispute": ident, "state": full["state"], "outcome": outcome,
            "seconds": round(time.monotonic() - started, 3), **flow}


def _timeline(dispute: Mapping[str, Any]) -> list[str]:
    first = parse_stamp(dispute["timeline"][0]["at"])
    lines = []
    for event in dispute["timeline"]:
        offset_ms = int((parse_stamp(event["at"]) - first).total_seconds() * 1000)
        who = "" if event["actor"] is None else f" by {event['actor']['body']}/{event['actor']['role']}"
        detail = _detail(str(event["type"]), event["data"])
        lines.append(f"+{offset_ms:>6} ms  {event['type']:<12}{who}  {detail}".rstrip())
    return lines


def _deliveries(endpoints: Endpoints, settings: Settings, readers: RoleReaders) -> dict[str, Any]:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    cases = positive_tests(day, {"blaby": 4, "charnwood": 3, "leicester": 3}, prefix=f"O{uuid.uuid4().hex[:5].upper()}")
    topic = delivery_topic(BLABY, "environmental-health", STREAM)
    starts = ends_now(endpoints.kafka, [topic]).get(topic, {})
    with open_ingest(endpoints.kafka, endpoints.registry_url, settings) as (ingest, _):
        outcomes = ingest.publish(STREAM, cases, source="demo")
    sources = {f"{o.topic}/{o.partition}/{o.offset}".encode(): cases[o.index] for o in outcomes}
    got = readers(BLABY, "environmental-health").read(topic, starts, lambda _, h: h.get("accord.source") in sources,
                                                      want=4, timeout_s=15)
    return {"published": len(cases), "rows": len(got), "fields": sorted(got[0].value) if got else [],
            "areas": sorted({str(sources[d.source]["ltla"]) for d in got})}   # of the records delivered from


def _detail(kind: str, data: Mapping[str, Any]) -> str:
    if kind == "tier-opened":
        return f"tier {data['tier'] + 1} due {data['deadline']} ({data['why']})"
    if kind == "approved":
        return f"{data['outcome']}: {data['reason']}"
    if kind == "decided":
        return f"{data['outcome']} until {data['until']}" if data.get("until") else str(data["outcome"])
    if kind == "enforced":
        return f"control offsets {[c['offset'] for c in data['control']]}"
    if kind == "appealed":
        return str(data["reason"])
    return ""
