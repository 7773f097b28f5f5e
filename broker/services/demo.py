"""The main job shown by `make demo`: validated Avro ingest through the real Kafka and registry, decisions from OPA."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.adapters.kafka_admin import describe_cluster
from broker.adapters.opa import OpaPolicyEngine
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.local.stack import Endpoints
from broker.local.toolchain import REPO_ROOT
from broker.services.api_runtime import open_ingest
from broker.services.serde import AvroDeserializer, SerializationContext

STREAM = "ukhsa.positive-tests"
POLICY_DIR = REPO_ROOT / "policies"

# A synthetic Leicester case (names and numbers are made up; the NHS number fails the modulus 11 check).
SAMPLE_CASE: dict[str, Any] = {
    "specimen_id": "LEI-20200622-000123", "nhs_number": "9990000001", "name": "Alex Example",
    "dob": dt.date(1984, 3, 7), "sex": "FEMALE", "ethnicity": "A", "address": "1 Example Road, Leicester",
    "postcode": "LE1 1AA", "occupation": None, "specimen_date": dt.date(2020, 6, 22),
    "lab_report_date": dt.date(2020, 6, 23), "test_type": "PCR", "pillar": "PILLAR_2",
    "lsoa": "E01013578", "msoa": "E02002807", "ltla": "E06000016", "utla": "E06000016",
}

# The agreement a pre-agreed T1 template would produce for Leicester's DPH (catalog YAML comes later).
DEMO_AGREEMENTS = {
    "t1-leicester-dph": {
        "subscriber": "leicester-city-council", "stream": STREAM, "purpose": "health-protection",
        "roles": ["dph"], "valid_from": "2020-03-20T00:00:00Z", "valid_until": "2022-06-30T00:00:00Z",
        "emergency_level_required": "emergency",
    }
}


def load_policies(engine: OpaPolicyEngine, policy_dir: Path = POLICY_DIR) -> list[str]:
    """Push every non-test Rego module under `policy_dir` to OPA; returns their module ids."""
    loaded = []
    for path in sorted(policy_dir.rglob("*.rego")):
        if path.name.endswith("_test.rego"):
            continue
        module_id = path.relative_to(policy_dir).with_suffix("").as_posix()
        engine.put_policy(module_id, path.read_text())
        loaded.append(module_id)
    return loaded


def run(endpoints: Endpoints, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo; returns what happened (the CLI prints as it goes)."""
    cluster = describe_cluster(endpoints.kafka_bootstrap)
    say(f"Kafka {endpoints.kafka_bootstrap} (cluster {cluster.cluster_id}) · OPA {endpoints.opa_url} · "
        f"registry {endpoints.registry_url}")
    bad_case = SAMPLE_CASE | {"specimen_id": "LEI-20200622-000124", "postcode": "",
                              "specimen_date": dt.date(2099, 1, 1)}
    with open_ingest(endpoints.kafka_bootstrap, endpoints.registry_url) as (ingest, log):
        good, bad = ingest.publish(STREAM, [SAMPLE_CASE, bad_case], source="demo")
        say(f"1. published one T1 positive test: {good.status} onto {good.topic}[{good.partition}]@{good.offset} "
            "(Avro, Confluent wire format, schema in Accord's registry)")
        reasons = "; ".join(f"{r.field} broke {r.rule}" for r in bad.reasons)
        say(f"   and a faulty one: {bad.status} onto {bad.topic}@{bad.offset} because {reasons}")
        back = log.read(good.topic, max_records=1, start_offset=good.offset)
    registry = HttpSchemaRegistry(endpoints.registry_url)
    try:
        received = AvroDeserializer(registry)(back[0].value if back else None, SerializationContext(good.topic))
    finally:
        registry.close()
    if received is None:
        raise RuntimeError(f"the record published at offset {good.offset} could not be read back")
    same = received == SAMPLE_CASE
    say(f"2. read it back (read_committed): specimen {received['specimen_id']}, utla {received['utla']}, "
        f"specimen_date {received['specimen_date']}; identical: {'yes' if same else 'NO'}")
    decisions = _decide(endpoints, say)
    return {"offset": good.offset, "round_trip_identical": same, "quarantined": bad.status == "quarantined",
            "decisions": decisions}


def _decide(endpoints: Endpoints, say: Callable[[str], None]) -> dict[str, Any]:
    engine = OpaPolicyEngine(endpoints.opa_url)
    try:
        modules = load_policies(engine)
        engine.put_data("accord/agreements", DEMO_AGREEMENTS)
        say(f"3. OPA loaded policy modules {modules} and {len(DEMO_AGREEMENTS)} agreement")
        decisions = {}
        for subscriber in ("leicester-city-council", "nottingham-city-council"):
            request = {"subscriber": subscriber, "role": "dph", "stream": STREAM, "purpose": "health-protection",
                       "time": "2020-06-24T09:00:00Z", "emergency_level": "emergency"}
            decision = engine.evaluate("accord.sharing.decision", request)
            decisions[subscriber] = decision
            verdict = "ALLOW" if decision["allow"] else "DENY"
            why = ", ".join(decision["agreements"]) if decision["allow"] else "; ".join(decision["reasons"])
            say(f"   {subscriber}/dph asks for {STREAM} → {verdict} ({why})")
    finally:
        engine.close()
    return decisions
