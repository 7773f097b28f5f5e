"""The registry's Confluent REST API on the in-memory changelog: behaviour real clients rely on."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from broker.api.registry_app import MEDIA, create_registry_app
from broker.errors import ServiceError
from broker.services.registry import MemoryChangeSink, Registry
from tests.unit.auth_fakes import NO_TOKEN, SERVICE, FakeAuthz, bearer, guard, token

V1 = {"type": "record", "name": "Case", "namespace": "t", "fields": [{"name": "id", "type": "string"}]}
V2_DEFAULT = {**V1, "fields": [*V1["fields"], {"name": "utla", "type": ["null", "string"], "default": None}]}
V2_NO_DEFAULT = {**V1, "fields": [*V1["fields"], {"name": "utla", "type": "string"}]}
V3_DROPS_ID = {**V1, "fields": [{"name": "utla", "type": ["null", "string"], "default": None}]}


def _client(limit: int = 1_048_576, engine: FakeAuthz | None = None) -> tuple[TestClient, MemoryChangeSink]:
    registry = Registry()
    sink = MemoryChangeSink(registry)
    registry.bind(sink)
    app = create_registry_app(registry, max_body_bytes=limit, guard=guard(engine))
    return TestClient(app, headers=SERVICE), sink


def _register(client: TestClient, subject: str, schema: object) -> dict[str, object]:
    response = client.post(f"/subjects/{subject}/versions", json={"schema": json.dumps(schema)},
                           headers={"Content-Type": MEDIA})
    body: dict[str, object] = response.json()
    return {"status": response.status_code, **body}


def test_register_is_idempotent_and_ids_are_global() -> None:
    client, _ = _client()
    first = _register(client, "a-value", V1)
    assert first["status"] == 200
    assert _register(client, "a-value", V1)["id"] == first["id"]
    # Whitespace and key order do not make a different schema; another subject reuses the id.
    respelled = json.dumps(dict(reversed(list(V1.items()))), indent=4)
    again = client.post("/subjects/b-value/versions", json={"schema": respelled})
    assert again.json() == {"id": first["id"]}
    assert client.get("/subjects").json() == ["a-value", "b-value"]
    assert client.get(f"/schemas/ids/{first['id']}/subjects").json() == ["a-value", "b-value"]
    assert client.get(f"/schemas/ids/{first['id']}/versions").json() == [
        {"subject": "a-value", "version": 1}, {"subject": "b-value", "version": 1}]
    assert json.loads(client.get(f"/schemas/ids/{first['id']}").json()["schema"]) == V1
    assert client.get(f"/schemas/ids/{first['id']}").headers["content-type"] == MEDIA


def test_versions_lookup_and_raw_schema() -> None:
    client, _ = _client()
    _register(client, "s", V1)
    second = _register(client, "s", V2_DEFAULT)
    assert client.get("/subjects/s/versions").json() == [1, 2]
    latest = client.get("/subjects/s/versions/latest").json()
    assert latest["version"] == 2 and latest["id"] == second["id"] and latest["subject"] == "s"
    assert client.get("/subjects/s/versions/-1").json() == latest
    assert json.loads(client.get("/subjects/s/versions/1/schema").text) == V1
    found = client.post("/subjects/s", json={"schema": json.dumps(V1)}).json()
    assert found["version"] == 1


def test_backward_default_refuses_new_field_without_default_naming_it() -> None:
    client, _ = _client()
    _register(client, "s", V1)
    refused = _register(client, "s", V2_NO_DEFAULT)
    assert refused["status"] == 409 and refused["error_code"] == 409
    assert "utla" in str(refused["message"]) and "READER_FIELD_MISSING_DEFAULT_VALUE" in str(refused["message"])
    verbose = client.post("/compatibility/subjects/s/versions/latest?verbose=true",
                          json={"schema": json.dumps(V2_NO_DEFAULT)}).json()
    assert verbose["is_compatible"] is False and "utla" in verbose["messages"][0]
    ok = client.post("/compatibility/subjects/s/versions/latest", json={"schema": json.dumps(V2_DEFAULT)})
    assert ok.json() == {"is_compatible": True}


@pytest.mark.parametrize(("mode", "accepted"), [
    ("BACKWARD", True), ("BACKWARD_TRANSITIVE", False), ("FORWARD", True), ("FORWARD_TRANSITIVE", True),
    ("FULL", True), ("FULL_TRANSITIVE", False), ("NONE", True),
])
def test_seven_modes_decide_a_third_version(mode: str, accepted: bool) -> None:
    # v3 makes utla required: it reads v2 data (which always has utla) but not v1 data (which has none), and
    # v1 and v2 both read v3 data. So only the modes that look back past the latest version refuse it.
    client, _ = _client()
    v2 = {**V1, "fields": [*V1["fields"], {"name": "utla", "type": "string", "default": "E92000001"}]}
    v3 = {**V1, "fields": [*V1["fields"], {"name": "utla", "type": "string"}]}
    assert client.put("/config/s", json={"compatibility": "NONE"}).status_code == 200
    _register(client, "s", V1)
    _register(client, "s", v2)
    assert client.put("/config/s", json={"compatibility": mode}).json() == {"compatibility": mode}
    result = _register(client, "s", v3)
    assert (result["status"] == 200) is accepted, result


def test_config_global_and_subject() -> None:
    client, _ = _client()
    assert client.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    assert client.put("/config", json={"compatibility": "full"}).json() == {"compatibility": "FULL"}
    missing = client.get("/config/s")
    assert missing.status_code == 404 and missing.json()["error_code"] == 40408
    assert client.get("/config/s?defaultToGlobal=true").json() == {"compatibilityLevel": "FULL"}
    client.put("/config/s", json={"compatibility": "NONE"})
    assert client.get("/config/s").json() == {"compatibilityLevel": "NONE"}
    assert client.delete("/config/s").json() == {"compatibilityLevel": "NONE"}
    assert client.delete("/config").json() == {"compatibilityLevel": "FULL"}
    assert client.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    bad = client.put("/config", json={"compatibility": "SIDEWAYS"})
    assert bad.status_code == 422 and bad.json()["error_code"] == 42203


def test_soft_then_permanent_delete() -> None:
    client, _ = _client()
    first = _register(client, "s", V1)
    _register(client, "s", V2_DEFAULT)
    not_soft = client.delete("/subjects/s/versions/1?permanent=true")
    assert not_soft.status_code == 404 and not_soft.json()["error_code"] == 40407
    assert client.delete("/subjects/s/versions/1").json() == 1
    assert client.get("/subjects/s/versions").json() == [2]
    assert client.get("/subjects/s/versions?deleted=true").json() == [1, 2]
    assert client.get("/subjects/s/versions/1").json()["error_code"] == 40402
    assert client.get("/subjects/s/versions/1?deleted=true").json()["version"] == 1
    assert client.delete("/subjects/s/versions/1?permanent=true").json() == 1
    assert client.get("/subjects/s/versions?deleted=true").json() == [2]
    # The id stays resolvable: records already written with it must still decode.
    assert client.get(f"/schemas/ids/{first['id']}").status_code == 200
    assert client.delete("/subjects/s").json() == [2]
    assert client.get("/subjects").json() == []
    assert client.delete("/subjects/s").json()["error_code"] == 40404
    assert client.delete("/subjects/s?permanent=true").json() == [2]
    assert client.get("/subjects/s/versions").json()["error_code"] == 40401


def test_errors_use_confluent_codes() -> None:
    client, _ = _client(limit=2048)
    bad_json = client.post("/subjects/s/versions", json={"schema": "{not json"})
    assert bad_json.status_code == 422 and bad_json.json()["error_code"] == 42201
    assert "Error parsing JSON" in bad_json.json()["message"]
    bad_avro = client.post("/subjects/s/versions", json={"schema": json.dumps({"type": "record", "name": "X"})})
    assert bad_avro.status_code == 422 and bad_avro.json()["error_code"] == 42201
    assert client.get("/schemas/ids/424242").json()["error_code"] == 40403
    assert client.get("/schemas/ids/abc").json()["error_code"] == 40403
    assert client.get("/subjects/nope/versions").json()["error_code"] == 40401
    _register(client, "s", V1)
    assert client.get("/subjects/s/versions/7").json()["error_code"] == 40402
    bad_version = client.get("/subjects/s/versions/zero")
    assert bad_version.status_code == 422 and bad_version.json()["error_code"] == 42202
    unknown = client.post("/subjects/s", json={"schema": json.dumps(V2_DEFAULT)})
    assert unknown.status_code == 404 and unknown.json()["error_code"] == 40403
    huge = client.post("/subjects/s/versions", content=b"{" + b" " * 4096 + b"}",
                       headers={"Content-Type": "application/json"})
    assert huge.status_code == 413
    wrong_type = client.post("/subjects/s/versions", content=b"x", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415


def test_state_rebuilt_from_changelog_is_identical() -> None:
    client, sink = _client()
    ids = [_register(client, "s", V1)["id"], _register(client, "s", V2_DEFAULT)["id"]]
    client.put("/config/s", json={"compatibility": "FULL"})
    client.delete("/subjects/s/versions/1")
    replayed = Registry()
    # Compaction keeps the last record per key, in order: replaying only those gives the same state.
    last: dict[str, Any] = {}
    for key, value in sink.records:
        last.pop(key, None)
        last[key] = value
    for key, value in last.items():
        replayed.apply(key, value)
    assert replayed.read(lambda s: [v.schema_id for v in s.versions("s", deleted=True)]) == ids
    assert replayed.read(lambda s: s.mode("s").value) == "FULL"
    assert replayed.read(lambda s: [v.version for v in s.versions("s")]) == [2]


def test_every_route_but_the_root_needs_a_token_in_confluents_error_shape() -> None:
    client, _ = _client()
    assert client.get("/", headers=NO_TOKEN).status_code == 200
    refused = client.get("/subjects", headers=NO_TOKEN)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["error_code"] == 401 and "Bearer" in refused.json()["message"]


def test_opa_is_asked_about_the_subject_and_its_refusal_is_403() -> None:
    engine = FakeAuthz(lambda asked: asked["identity"]["body"] == "ukhsa")
    client, _ = _client(engine=engine)
    subject = "ingest.ukhsa.positive-tests-value"
    body = {"schema": json.dumps(V1)}
    refused = client.post(f"/subjects/{subject}/versions", json=body, headers=bearer("nhse", "ig-lead"))
    assert refused.status_code == 403
    assert engine.asked[-1]["route"] == "/subjects/{subject}/versions"
    assert engine.asked[-1]["params"] == {"subject": subject}
    assert client.post(f"/subjects/{subject}/versions", json=body, headers=bearer("ukhsa", "ig-lead")).status_code \
        == 200


def _own_deliveries(who: Mapping[str, Any], subject: str) -> bool:
    return who["body"] == "accord" or subject.startswith(f"deliver.{who['body']}.")


def test_lists_show_a_body_only_what_opa_lets_it_see() -> None:
    engine = FakeAuthz(sees=_own_deliveries)
    client, _ = _client(engine=engine)
    mine, theirs = "deliver.leicester.dph.t1-value", "deliver.blaby.eh.t1-value"
    shared = _register(client, mine, V1)["id"]
    assert _register(client, theirs, V1)["id"] == shared  # one schema, two subjects
    leicester = bearer("leicester", "dph")
    assert client.get("/subjects").json() == [theirs, mine]
    assert client.get("/subjects", headers=leicester).json() == [mine]
    assert client.get("/subjects?deleted=true", headers=leicester).json() == [mine]
    assert client.get(f"/schemas/ids/{shared}/subjects", headers=leicester).json() == [mine]
    assert client.get(f"/schemas/ids/{shared}/versions", headers=leicester).json() == [
        {"subject": mine, "version": 1}]
    assert engine.asked[-1] == {"identity": {"body": "leicester", "role": "dph", "person": "dph of leicester"},
                                "subjects": [theirs, mine]}
    assert client.get("/subjects", headers=bearer("nhse", "ig-lead")).json() == []


def test_opa_decides_a_schema_by_id_from_the_subjects_that_use_it() -> None:
    engine = FakeAuthz(lambda asked: asked["resource"] == {} or "deliver.leicester.dph.t1-value" in
                       asked["resource"]["schema"]["subjects"])
    client, _ = _client(engine=engine)
    shared = _register(client, "deliver.leicester.dph.t1-value", V1)["id"]
    client.delete("/subjects/deliver.leicester.dph.t1-value")  # soft-deleted: still what the id is used by
    assert client.get(f"/schemas/ids/{shared}").status_code == 200
    assert engine.asked[-1]["resource"] == {"schema": {"id": str(shared),
                                                       "subjects": ["deliver.leicester.dph.t1-value"]}}
    other = _register(client, "deliver.blaby.eh.t1-value", V2_DEFAULT)["id"]
    assert client.get(f"/schemas/ids/{other}/schema").status_code == 403
    assert client.get("/schemas/ids/12345").status_code == 403  # unknown: nothing sees it, nothing is revealed
    assert engine.asked[-1]["resource"] == {"schema": {"id": "12345", "subjects": []}}


class NoVisibilityRule(FakeAuthz):
    """A policy engine whose authz policy predates `visible_subjects`: routes are allowed, the list rule undefined."""

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> Any:
        answer = super().evaluate(rule, input_doc)
        return answer if isinstance(answer, dict) else None


def test_a_list_is_refused_with_503_when_opa_cannot_filter_it() -> None:
    client, _ = _client(engine=NoVisibilityRule())
    _register(client, "s", V1)
    assert client.get("/subjects").status_code == 503
    client, _ = _client(engine=FakeAuthz(down=True))
    assert client.get("/subjects").status_code == 503


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_http_basic_carries_a_token_with_the_body_id_as_user_name() -> None:
    engine = FakeAuthz(sees=_own_deliveries)
    client, _ = _client(engine=engine)
    _register(client, "deliver.leicester.dph.t1-value", V1)
    assert client.get("/subjects", headers=_basic("leicester", token("leicester", "dph"))).json() == [
        "deliver.leicester.dph.t1-value"]
    assert engine.asked[-2]["identity"] == {"body": "leicester", "role": "dph", "person": "dph of leicester"}
    for refused in (_basic("blaby", token("leicester", "dph")),             # another body's name
                    _basic("leicester", token("leicester", "dph", key=Ed25519PrivateKey.generate())),
                    _basic("leicester", "not-a-token"), _basic("", token("leicester", "dph")),
                    {"Authorization": "Basic not-base64!"}, {"Authorization": f"Basic {token('leicester', 'dph')}"}):
        answer = client.get("/subjects", headers=refused)
        assert answer.status_code == 401, refused
        assert 'Basic realm="accord"' in answer.headers["www-authenticate"]
    wrong_body = client.get("/subjects", headers=_basic("blaby", token("leicester", "dph")))
    assert "user name must be the body id" in wrong_body.json()["message"]


def test_a_changelog_that_does_not_answer_is_unavailable_not_a_server_error() -> None:
    """Kafka restarting under the registry: 503 with Retry-After and Confluent's backend-store error code."""
    registry = Registry()

    class Unreachable(MemoryChangeSink):
        def catch_up(self) -> None:
            raise ServiceError("reading the end of _accord.schemas failed: KafkaTimeoutError: timed out\nmore")

    registry.bind(Unreachable(registry))
    client = TestClient(create_registry_app(registry, guard=guard(None)), headers=SERVICE)
    answer = client.post("/subjects/a-value/versions", json={"schema": json.dumps(V1)})
    assert answer.status_code == 503, answer.text
    assert answer.json() == {"error_code": 50001,
                             "message": "reading the end of _accord.schemas failed: KafkaTimeoutError: timed out"}
    assert answer.headers["retry-after"] == "5"
