"""The main job shown by `make demo`: a national body publishes a day of positive tests, each council receives its
view through the policy gate, and a revocation takes effect on the live stream."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from broker.adapters.governance_http import GovernanceClient
from broker.adapters.kafka_admin import end_positions, wait_consumed
from broker.adapters.kafka_log import KafkaLog
from broker.catalog import load_and_compile
from broker.clock import system_clock
from broker.config import Settings
from broker.demo import dispute as demo_dispute
from broker.demo import sink as demo_sink
from broker.demo.steady_publisher import publish_steadily
from broker.demo.synthetic import positive_tests
from broker.domain.topics import delivery_topic, ingest_topic, quarantine_topic
from broker.errors import DeliveryRefused
from broker.local.stack import Endpoints
from broker.runtime.api import open_ingest
from broker.runtime.deliveries import Delivered, RoleReaders, ends_now
from broker.runtime.gate import GateEndpoints, GateThread
from broker.security import api_tokens
from broker.security.api_tokens import ServiceTokens
from broker.services import policy_changes
from broker.services.ingest import read_quarantine

STREAM = "ukhsa.positive-tests"
DAY_CASES = {"leicester": 24, "nottingham": 15, "blaby": 6, "charnwood": 8, "manchester": 20, "birmingham": 18,
             "leeds": 12, "hackney": 9, "cornwall": 5, "blackburn": 7}
VIEWS = [("leicester-city-council", "dph"), ("leicester-city-council", "analyst"), ("nottingham-city-council", "dph"),
         ("leicestershire-county-council", "dph"), ("manchester-city-council", "analyst")]
REVOKED = "t1-leicester"
Say = Callable[[str], None]


def run(endpoints: Endpoints, settings: Settings, say: Say = print, own_gate: bool = False,
        postgres_dsn: str | None = None) -> dict[str, Any]:
    """Run the demo against running services; with `own_gate` it runs a gate worker itself (else the stack's).

    Every control change goes through the governance API with the token of the person making it, as the
    `accord catalog apply` and `accord agreement revoke` commands do. With `postgres_dsn`, Leicester's DPH's sink
    also fills a table in that database with the day's rows."""
    with ExitStack() as stack:
        api = GovernanceClient(endpoints.governance_url)
        stack.callback(api.close)
        log = KafkaLog(endpoints.kafka, client_id="accord-demo")
        stack.callback(log.close)
        change = _apply_catalog(api, settings, say)
        if own_gate:
            gate_settings = settings.model_copy(update={"gate_group": f"accord-demo-{uuid.uuid4().hex[:8]}",
                                                        "gate_start_from": "latest"})
            gate = GateThread(GateEndpoints(endpoints.kafka, endpoints.opa_url, endpoints.registry_url),
                              gate_settings, "demo-gate").start()
            stack.callback(gate.stop)
        (status,) = policy_changes.enforcement(log, change, workers=1, timeout_s=30)
        topics = sum(map(len, status["deliveries"].values()))
        say(f"   gate worker {status['worker']} enforces it: delivering to {topics} subscriber topics")
        # Each council's role reads its deliveries on its own Kafka login, as it would.
        readers = RoleReaders(settings, endpoints.kafka, endpoints.registry_url,
                              ServiceTokens(settings.secrets_dir, "demo"), client_id="accord-demo-subscriber")
        stack.callback(readers.close)
        views = _publish_day(endpoints, settings, readers, log, say)
        table, prefix = None, views.pop("prefix")
        if postgres_dsn is not None:
            table = demo_sink.fill_table(endpoints, settings, postgres_dsn, STREAM, prefix,
                                         views["leicester-city-council/dph"]["rows"], say)
        gate_group = gate_settings.gate_group if own_gate else settings.gate_group
        revocation = _revoke_live(endpoints, settings, gate_group, readers, api, log, say)
        dispute = demo_dispute.run(endpoints, readers, log, say, settings)
    _console_links(endpoints, settings, say)
    return {"catalog_revision": status.get("catalog_revision"), "views": views,
            "revocation": revocation, "dispute": dispute, "table": table}


CONSOLE_PLAYERS = (("the Director of Public Health of Leicester", "leicester-city-council", "dph",
                    "Exercise Director of Public Health"),
                   ("UKHSA's information-governance lead", "ukhsa", "ig-lead", "Exercise IG Lead (UKHSA)"),
                   ("a member of the governance board (DHSC)", "dhsc", "governance-board", "Exercise Board Member"))


def _read_once_unfenced(read: Callable[[], list[Delivered]], timeout_s: float = 60.0) -> list[Delivered]:
    """`read()` once Kafka lets the reader in again: the revocation fenced the topic (its readers refused), and the
    governance service lifts the fence only after it has applied the reinstatement, a moment after the API answered."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return read()
        except DeliveryRefused:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _console_links(endpoints: Endpoints, settings: Settings, say: Say) -> None:
    """Where the console is, and a one-time sign-in link for each of three players (as `accord credentials token
    --link` prints them)."""
    if not endpoints.console_url:
        say("6. no console is running (`accord local up` starts it)")
        return
    say(f"6. the Accord Console is at {endpoints.console_url} (public transparency page: "
        f"{endpoints.console_url}/transparency); one-time sign-in links, each valid for 15 minutes:")
    key = api_tokens.signing_key(settings.secrets_dir)
    for who, body, role, person in CONSOLE_PLAYERS:
        token = api_tokens.issue(key, body, role, person, api_tokens.SIGN_IN_TTL, system_clock(),
                                 use=api_tokens.SIGN_IN)
        say(f"   {who}: {endpoints.console_url}/sign-in?link={token}")


def _token(settings: Settings, body: str, role: str, person: str) -> str:
    """A player's own short-lived token, as `accord credentials token` would issue it."""
    key = api_tokens.signing_key(settings.secrets_dir)
    return api_tokens.issue(key, body, role, person, dt.timedelta(minutes=15), system_clock())


def _announced(answer: dict[str, Any]) -> policy_changes.Announced:
    control = answer["control"]
    return policy_changes.Announced(str(control["key"]), int(control["offset"]), int(control["timestamp_ms"]))


def _apply_catalog(api: GovernanceClient, settings: Settings, say: Say) -> policy_changes.Announced:
    document = load_and_compile(settings.catalog_dir, settings.schemas_dir)
    operator = _token(settings, api_tokens.SERVICE_BODY, api_tokens.OPERATOR_ROLE, "Accord demo operator")
    change = _announced(api.call("PUT", "/catalog", operator, {"catalog": document}))
    say(f"1. catalog {document['revision']} applied: {len(document['bodies'])} bodies, {len(document['agreements'])} "
        f"agreements compiled to OPA data (policies: OPA's signed bundle); announced at control offset {change.offset}")
    return change


def _publish_day(endpoints: Endpoints, settings: Settings, readers: RoleReaders, log: KafkaLog, say: Say
                 ) -> dict[str, Any]:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    prefix = f"D{uuid.uuid4().hex[:5].upper()}"
    cases = positive_tests(day, DAY_CASES, prefix=prefix)
    no_geography = {"ltla": None, "utla": None, "lsoa": None}
    lost = positive_tests(day, {"leicester": 1}, prefix=f"{prefix}-NOGEO")[0] | no_geography
    # Read from here on: a long-running stack's topics hold far more than a short read reaches from their start.
    starts = ends_now(endpoints.kafka, [*(delivery_topic(s, r, STREAM) for s, r in VIEWS), quarantine_topic(STREAM)])
    with open_ingest(endpoints.kafka, endpoints.registry_url, settings) as (ingest, _):
        outcomes = ingest.publish(STREAM, [*cases, lost], source="demo")
    sources = {f"{o.topic}/{o.partition}/{o.offset}".encode() for o in outcomes if o.status == "accepted"}
    say(f"2. UKHSA publishes a synthetic day ({day}) of {len(cases)} positive tests over {len(DAY_CASES)} councils, "
        f"plus one case whose residence no lookup resolved: {len(sources)} accepted onto ingest.{STREAM}")
    views: dict[str, Any] = {"prefix": prefix}
    expected = _expected_counts(cases)
    for subscriber, role in VIEWS:
        topic, reader = delivery_topic(subscriber, role, STREAM), readers(subscriber, role)
        got = reader.read(topic, starts.get(topic, {}), lambda _, h: h.get("accord.source") in sources,
                          want=expected.get(subscriber, 0), timeout_s=15)
        fields = sorted(got[0].value) if got else []
        views[f"{subscriber}/{role}"] = {"rows": len(got), "fields": fields, "login": reader.login,
                                         "areas": sorted({str(d.value.get("ltla")) for d in got if "ltla" in d.value})}
        say(f"   {subscriber}/{role} (Kafka login {reader.login}): {len(got)} rows, {len(fields)} fields "
            f"({', '.join(fields)})")
        if got:
            say(f"     e.g. {_example(got[0].value)}")
    since = starts.get(quarantine_topic(STREAM), {}).get(0, 0)
    quarantined = [e for e in read_quarantine(log, STREAM, limit=100_000, timeout_s=1.0, start_offset=since)
                   if e["source"].get("kind") == "gate"
                   and f"{e['source']['topic']}/{e['source']['partition']}/{e['source']['offset']}".encode() in sources]
    for entry in quarantined:
        reason = entry["reasons"][0]
        say(f"   quarantined (delivered to nobody): offset {entry['source']['offset']}: {reason['rule']}: "
            f"{reason['message']}")
    views["quarantined"] = len(quarantined)
    return views


def _expected_counts(cases: list[dict[str, Any]]) -> dict[str, int]:
    by_utla: dict[str, int] = {}
    for case in cases:
        by_utla[case["utla"]] = by_utla.get(case["utla"], 0) + 1
    utlas = {"leicester-city-council": "E06000016", "nottingham-city-council": "E06000018",
             "leicestershire-county-council": "E10000018", "manchester-city-council": "E08000003"}
    return {body: by_utla.get(code, 0) for body, code in utlas.items()}


def _example(record: dict[str, Any]) -> str:
    text = json.dumps(record, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def _revoke_live(endpoints: Endpoints, settings: Settings, gate_group: str, readers: RoleReaders,
                 api: GovernanceClient, log: KafkaLog, say: Say) -> dict[str, Any]:
    """Leicester cases keep arriving; the agreement is revoked mid-stream, then reinstated."""
    topic = delivery_topic("leicester-city-council", "dph", STREAM)
    cases = positive_tests(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1), {"leicester": 300},
                           prefix=f"R{uuid.uuid4().hex[:5].upper()}")
    sent_at: dict[str, float] = {}
    stop = threading.Event()
    since = end_positions(endpoints.kafka, [ingest_topic(STREAM)])
    delivered_from = ends_now(endpoints.kafka, [topic]).get(topic, {})
    publisher = threading.Thread(target=publish_steadily, daemon=True, kwargs={
        "settings": settings, "kafka": endpoints.kafka, "registry_url": endpoints.registry_url, "stream": STREAM,
        "records": cases, "pause_s": 0.01, "key_field": "utla", "sent_at": sent_at, "stop": stop,
        "client_id": "accord-demo-publisher"})
    publisher.start()
    ig_lead = _token(settings, "ukhsa", "ig-lead", "UKHSA IG Lead")  # the agreement's publisher withdraws it
    try:
        time.sleep(1.5)
        change = _announced(api.call("POST", f"/agreements/{REVOKED}/revoke", ig_lead,
                                     {"reason": "demo: the publisher withdraws"}))
        acked_at = time.time()  # appended by now: whatever is sent later is consumed after the revocation
        (status,) = policy_changes.enforcement(log, change, workers=1, timeout_s=10)
        time.sleep(1.5)
        stop.set()
        publisher.join(timeout=10)
        # Everything published under the revocation is consumed under it before the reinstatement: a record the
        # gate reaches only after the reinstatement is rightly delivered, and would look like a leak.
        wait_consumed(endpoints.kafka, gate_group, since)
    finally:
        stop.set()
        publisher.join(timeout=10)
        api.call("POST", f"/agreements/{REVOKED}/reinstate", ig_lead, {"reason": "demo: the exercise goes on"})
    names = set(sent_at)
    got = _read_once_unfenced(lambda: readers("leicester-city-council", "dph").read(
        topic, delivered_from, lambda v, _: v.get("specimen_id") in names, want=len(names), timeout_s=3, settle_s=0))
    before = [s for s, t in sent_at.items() if t <= acked_at]
    leaked = [d for d in got if sent_at[d.value["specimen_id"]] > acked_at]
    latency_ms = int(status["applied_ms"]) - change.timestamp_ms
    say(f"4. live revocation of {REVOKED} while Leicester cases stream in: enforced by {status['worker']} "
        f"{latency_ms} ms after the change")
    say(f"   published {len(sent_at)} ({len(before)} before the revocation); Leicester's DPH received {len(got)}, "
        f"of them {len(leaked)} published after it was acknowledged; then reinstated")
    return {"latency_ms": latency_ms, "published": len(sent_at), "published_before": len(before),
            "delivered": len(got), "delivered_after_revocation": len(leaked)}
