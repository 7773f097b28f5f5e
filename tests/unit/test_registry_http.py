"""The HTTP registry adapter against httpx.MockTransport: the requests it sends and how it reads answers."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from broker.adapters.registry_http import CONTENT_TYPE, HttpSchemaRegistry
from broker.domain.schemas import RegisteredSchema
from broker.errors import ConfigError, RegistryError

SCHEMA = '{"type": "string"}'
Handler = Callable[[httpx.Request], httpx.Response]


def _registry(handler: Handler, url: str = "http://registry.test:8081") -> HttpSchemaRegistry:
    return HttpSchemaRegistry(url, transport=httpx.MockTransport(handler), token=lambda: None)


def test_register_posts_the_schema_as_avro_under_an_encoded_subject() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": 7})

    assert _registry(handler).register("ingest/odd subject-value", SCHEMA) == 7
    request = seen[0]
    assert (request.method, request.url.raw_path) == ("POST", b"/subjects/ingest%2Fodd%20subject-value/versions")
    assert request.headers["content-type"] == CONTENT_TYPE
    assert json.loads(request.content) == {"schema": SCHEMA, "schemaType": "AVRO"}


def test_schema_by_id_and_latest_read_confluents_answers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/registry/schemas/ids/3":
            return httpx.Response(200, json={"schema": SCHEMA})
        assert request.url.path == "/registry/subjects/ingest.cases-value/versions/latest"
        return httpx.Response(200, json={"subject": "ingest.cases-value", "version": 2, "id": 3, "schema": SCHEMA})

    registry = _registry(handler, "http://registry.test:8081/registry/")
    assert registry.schema_by_id(3) == SCHEMA
    assert registry.latest("ingest.cases-value") == RegisteredSchema("ingest.cases-value", 2, 3, SCHEMA)
    registry.close()


def test_confluent_error_body_becomes_a_structured_error() -> None:
    body = {"error_code": 40401, "message": "Subject 'ingest.cases-value' not found."}
    registry = _registry(lambda request: httpx.Response(404, json=body))
    with pytest.raises(RegistryError) as err:
        registry.latest("ingest.cases-value")
    assert (err.value.status, err.value.error_code, err.value.message) == (404, 40401, body["message"])
    assert str(err.value) == "schema registry error 40401 (HTTP 404): Subject 'ingest.cases-value' not found."


def test_error_without_confluent_body_keeps_status_and_text() -> None:
    registry = _registry(lambda request: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(RegistryError) as err:
        registry.schema_by_id(1)
    assert (err.value.status, err.value.error_code) == (502, -1)
    assert err.value.message == "GET http://registry.test:8081/schemas/ids/1: <html>Bad Gateway</html>"


def test_unreachable_registry_is_status_0_naming_the_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    with pytest.raises(RegistryError) as err:
        _registry(handler).register("ingest.cases-value", SCHEMA)
    assert err.value.status == 0
    assert str(err.value) == ("schema registry unreachable: POST http://registry.test:8081/subjects/"
                              "ingest.cases-value/versions: ConnectError: Connection refused")


@pytest.mark.parametrize("response", [
    httpx.Response(200, text="not json"),
    httpx.Response(200, json=[1]),
    httpx.Response(200, json={"id": "7"}),
    httpx.Response(200, json={"id": True}),
])
def test_malformed_success_answer_is_a_registry_error(response: httpx.Response) -> None:
    with pytest.raises(RegistryError) as err:
        _registry(lambda request: response).register("s", SCHEMA)
    assert err.value.status == 200
    assert err.value.message.startswith("POST http://registry.test:8081/subjects/s/versions: ")


@pytest.mark.parametrize("url", ["registry:8081", "ftp://registry", "http://"])
def test_url_that_is_not_http_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="is not an http\\(s\\) URL"):
        HttpSchemaRegistry(url, token=lambda: None)


@pytest.mark.parametrize(("status", "body", "problems"), [
    (200, {"is_compatible": True, "messages": []}, []),
    (200, {"is_compatible": False, "messages": ["TYPE_MISMATCH at /fields/0/type"]},
     ["TYPE_MISMATCH at /fields/0/type"]),
    (200, {"is_compatible": False}, ["incompatible"]),
    (404, {"error_code": 40401, "message": "Subject 's-value' not found."}, []),
])
def test_compatibility_problems_asks_against_the_latest_version_verbosely(
        status: int, body: dict[str, object], problems: list[str]) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    assert _registry(handler).compatibility_problems("s-value", SCHEMA) == problems
    assert (seen[0].method, seen[0].url.path, seen[0].url.params["verbose"]) == (
        "POST", "/compatibility/subjects/s-value/versions/latest", "true")


def test_compatibility_problems_raises_what_is_no_answer_about_the_schema() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error_code": 40301, "message": "forbidden"})

    with pytest.raises(RegistryError, match="forbidden"):
        _registry(handler).compatibility_problems("s-value", SCHEMA)
