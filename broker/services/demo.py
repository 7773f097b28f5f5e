"""The main job shown by `make demo`: one Avro record through the real Kafka, one decision from the real OPA."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro

from broker.adapters.kafka_admin import create_topics, describe_cluster
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.opa import OpaPolicyEngine
from broker.local.stack import Endpoints
from broker.local.toolchain import REPO_ROOT

STREAM = "ukhsa.positive-tests"
SCHEMA_FILE = REPO_ROOT / "schemas" / f"{STREAM}.avsc"
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


def encode(schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def decode(schema: Any, payload: bytes) -> dict[str, Any]:
    result = fastavro.schemaless_reader(io.BytesIO(payload), schema, schema)
    if not isinstance(result, dict):
        raise ValueError(f"expected an Avro record, decoded {type(result).__name__}")
    return result


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
    say(f"Kafka {endpoints.kafka_bootstrap} (cluster {cluster.cluster_id}) · OPA {endpoints.opa_url}")

    schema = fastavro.parse_schema(json.loads(SCHEMA_FILE.read_text()))
    topic = f"ingest.{STREAM}"
    create_topics(endpoints.kafka_bootstrap, [topic])
    log = KafkaLog(endpoints.kafka_bootstrap, client_id="accord-demo")
    try:
        payload = encode(schema, SAMPLE_CASE)
        partition, offset = log.publish(topic, payload, key=SAMPLE_CASE["specimen_id"].encode(),
                                        headers=[("accord.stream", STREAM.encode())])
        say(f"1. published one T1 positive test to {topic}: partition {partition}, offset {offset}, "
            f"{len(payload)} bytes of Avro")
        back = log.read(topic, max_records=1, start_offset=offset)
    finally:
        log.close()
    if not back or back[0].value is None:
        raise RuntimeError(f"the record published at offset {offset} could not be read back")
    received = decode(schema, back[0].value)
    same = received == SAMPLE_CASE
    say(f"2. read it back (read_committed) from offset {back[0].offset}: specimen {received['specimen_id']}, "
        f"utla {received['utla']}, specimen_date {received['specimen_date']}; identical: {'yes' if same else 'NO'}")

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
    return {"offset": offset, "round_trip_identical": same, "decisions": decisions}
