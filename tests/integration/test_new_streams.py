"""A new stream goes live without restarts: `accord catalog apply` with a stream whose schema is no file of schemas/
registers the schema, and the running API accepts the stream and a running gate worker delivers it; an incompatible
change of its schema is refused with the registry's reason and changes nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from broker.adapters.registry_http import HttpSchemaRegistry
from broker.config import Settings
from broker.domain.topics import ingest_topic, value_subject
from broker.local import processes
from broker.local.python_service import PythonService
from broker.local.stack import Endpoints, LocalStack
from tests.conftest import apply_again, bearer, kafka_env, opa_as, service_tokens
from tests.integration.gate_support import Receiver, make_test_catalog, start_gate, topic_for

# Streams of this run only: the control topic, the registry and the API outlive a test session's other tests.
RUN = uuid.uuid4().hex[:8]
SUBSCRIBER, ROLE = "leicester-city-council", "dph"
LEICESTER, NOTTINGHAM = "E06000016", "E06000018"
SCHEMA: dict[str, Any] = {
    "type": "record", "name": "WastewaterSample", "namespace": "uk.accord.tests",
    "doc": "A sewage treatment works' SARS-CoV-2 sample, by the council it serves.",
    "accord.jurisdiction": ["ltla"], "accord.required": ["sample_id", "ltla", "sample_date"],
    "fields": [
        {"name": "sample_id", "type": "string", "accord.max_length": 32},
        {"name": "ltla", "type": "string", "accord.tags": ["geography:ltla"]},
        {"name": "sample_date", "type": {"type": "int", "logicalType": "date"}},
        {"name": "gene_copies_per_litre", "type": "double"},
    ],
}
AGREEMENT = """agreement: test-{name}
stream: {stream}
subscriber: {SUBSCRIBER}
purpose: health-protection
legal_basis: [uk-gdpr-6-1-e]
tiers:
  cell: {{roles: [{ROLE}], fields: {{sample_id: keep, ltla: keep, sample_date: keep, gene_copies_per_litre: keep}}}}
valid_from: 2026-01-01T00:00:00Z
valid_until: 2027-12-31T23:59:59Z
review_date: 2027-06-30
signatories:
  - {{body: ukhsa, name: Test IG Lead, role: ig-lead}}
  - {{body: {SUBSCRIBER}, name: Test DPH, role: {ROLE}}}
"""


def _stream(what: str) -> str:
    return f"ukhsa.wastewater-{what}-{RUN}"


def _accord(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "broker", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def _operator() -> str:
    return bearer("accord", "operator", "Ops on call")["Authorization"].removeprefix("Bearer ")


@pytest.fixture(scope="module")
def governance(services: Endpoints, applied_catalog: dict[str, Any],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PythonService, str]]:
    """A real `accord governance serve` (the session stopped its own); at the end the session's catalog is applied
    again, so the tests after these meet the catalog they expect (without this module's stream)."""
    process = PythonService("governance", tmp_path_factory.mktemp("governance"))
    url = process.start(kafka_env(services.kafka) | {"ACCORD_OPA_URL": services.opa_url}, 90, probe="/health")
    try:
        yield process, url
    finally:
        process.stop()
        apply_again(services, applied_catalog)


def _catalog(root: Path, stream: str, schema: dict[str, Any]) -> Path:
    """The session's test catalog plus `stream` (its schema a file beside the catalog, named by `schema:`) and an
    agreement giving it to Leicester's DPH."""
    catalog = make_test_catalog(root)
    (root / "wastewater.avsc").write_text(json.dumps(schema))
    streams = catalog / "streams.yaml"
    streams.write_text(streams.read_text() + f"  - id: {stream}\n    owner: ukhsa\n    classification: official\n"
                                             "    schema: ../wastewater.avsc\n")
    name = stream.split(".")[1]
    (catalog / "agreements" / f"test-{name}.yaml").write_text(
        AGREEMENT.format(name=name, stream=stream, SUBSCRIBER=SUBSCRIBER, ROLE=ROLE))
    return catalog


def _env(services: Endpoints, governance_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of `accord` as an operator runs it against the session's services."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")},
            "ACCORD_STATE_DIR": str(tmp_path / "state"), **dict(line.split("=", 1) for line in services.env_lines()),
            "ACCORD_GOVERNANCE_URL": governance_url}


def _api_pid() -> int | None:
    return processes.read_pid(LocalStack(Settings()).api.pid_file)


@pytest.mark.parametrize("transport", ["kafka-python", "librdkafka"])
def test_a_new_stream_is_delivered_by_running_processes(services: Endpoints, governance: tuple[PythonService, str],
                                                         receiver: Receiver, tmp_path: Path,
                                                         transport: Literal["kafka-python", "librdkafka"]) -> None:
    stream = _stream(transport)
    process, governance_url = governance
    api_pid, governance_pid = _api_pid(), processes.read_pid(process.pid_file)
    assert api_pid is not None and governance_pid is not None
    ukhsa = bearer("ukhsa", "ig-lead")
    publish = f"{services.api_url}/streams/{stream}/records"
    unknown = httpx.post(publish, json={"records": []}, headers=ukhsa, timeout=30)
    assert unknown.status_code == 404 and "no applied catalog names it" in unknown.json()["error"], unknown.text
    gate = start_gate(services, "new-streams", f"new-streams-{uuid.uuid4().hex[:6]}", transport=transport)
    try:
        assert gate.gate is not None and ingest_topic(stream) not in gate.gate.topics
        prefix = f"ww-{uuid.uuid4().hex[:8]}"
        sample = {"sample_id": prefix, "ltla": LEICESTER,
                  "sample_date": (dt.date.today() - dt.timedelta(days=1)).isoformat(),
                  "gene_copies_per_litre": 31250.5}
        elsewhere = {**sample, "sample_id": f"{prefix}-n", "ltla": NOTTINGHAM}
        catalog = _catalog(tmp_path, stream, SCHEMA)
        started = time.monotonic()
        applied = _accord(["catalog", "apply", str(catalog), "--token", _operator()],
                          _env(services, governance_url, tmp_path))
        assert applied.returncode == 0, applied.stderr
        apply_s = time.monotonic() - started
        answer = httpx.post(publish, json={"records": [sample, elsewhere]}, headers=ukhsa, timeout=30)
        assert answer.status_code == 200 and answer.json()["accepted"] == 2, answer.text
        mine = topic_for(SUBSCRIBER, ROLE, stream)

        def ours(value: dict[str, Any], _: dict[str, bytes]) -> bool:
            return str(value.get("sample_id", "")).startswith(prefix)

        assert receiver.records(mine, 0, ours, want=1, timeout_s=60, settle_s=0), "delivered within 60 s"
        elapsed = time.monotonic() - started
        print(json.dumps({"transport": transport, "apply_to_first_delivery_s": round(elapsed, 3),
                          "of_which_catalog_apply_command_s": round(apply_s, 3)}))
        received = receiver.records(mine, 0, ours, want=1, timeout_s=10)
        assert [value for value, _ in received] == [{**sample, "sample_date": dt.date.fromisoformat(
            str(sample["sample_date"]))}], "Leicester's DPH gets its own council's row, whole, and no other"
        assert gate.alive() and gate.failure is None and ingest_topic(stream) in gate.gate.topics, "the same worker"
    finally:
        gate.stop()
    assert (_api_pid(), processes.read_pid(process.pid_file)) == (api_pid, governance_pid), "nothing restarted"
    # A worker started after the record was published, in a new group that starts at the end of the topics it
    # starts with, still reads the new stream's topic from its start.
    late = start_gate(services, "new-streams-late", f"new-streams-late-{uuid.uuid4().hex[:6]}", transport=transport)
    try:
        by_late = receiver.records(mine, 0, lambda value, headers: ours(value, headers) and headers.get(
            "accord.worker") == late.worker.encode(), want=1, timeout_s=60)
        assert len(by_late) == 1, "the late worker delivered the row published before it started"
    finally:
        late.stop()


def test_an_incompatible_schema_change_is_refused_and_changes_nothing(
        services: Endpoints, governance: tuple[PythonService, str], tmp_path: Path) -> None:
    env, stream = _env(services, governance[1], tmp_path), _stream("changed")
    first = _accord(["catalog", "apply", str(_catalog(tmp_path / "v1", stream, SCHEMA)), "--token", _operator()], env)
    assert first.returncode == 0, first.stderr
    registry = HttpSchemaRegistry(services.registry_url, token=service_tokens())
    engine = opa_as(services.opa_url)
    try:
        subject = value_subject(ingest_topic(stream))
        before, revision = registry.latest(subject), engine.evaluate("accord.catalog.revision", {})
        # A field whose type changes from a number to text: readers of the old records could not read new ones.
        changed = {**SCHEMA, "fields": [*SCHEMA["fields"][:3], {"name": "gene_copies_per_litre", "type": "string"}]}
        refused = _accord(["catalog", "apply", str(_catalog(tmp_path / "v2", stream, changed)), "--token",
                           _operator()], env)
        assert refused.returncode == 1
        assert stream in refused.stderr and "nothing was applied" in refused.stderr, refused.stderr
        assert "TYPE_MISMATCH at /fields/3/type" in refused.stderr, "the registry's reason, where in the schema"
        assert registry.latest(subject) == before
        assert engine.evaluate("accord.catalog.revision", {}) == revision
    finally:
        engine.close()
        registry.close()
