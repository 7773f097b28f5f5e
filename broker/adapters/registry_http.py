"""The SchemaRegistry port on a Confluent-compatible Schema Registry, over its REST API with httpx."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from broker.domain.schemas import RegisteredSchema
from broker.errors import ConfigError, RegistryError

CONNECT_RETRIES = 3  # httpx tries to connect again at once, after 0.5 s and after 1 s

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# What RegistryError.error_code holds when the registry's answer carried no Confluent error body.
NO_ERROR_CODE = -1
T = TypeVar("T")


class HttpSchemaRegistry:
    """Talks to the registry at `url`, e.g. http://127.0.0.1:8081; `transport` lets tests replace the network.

    `token` gives the bearer token each call sends (None: no Authorization header); the registry authenticates
    every caller, so Accord's processes pass a service token provider (broker.security.api_tokens.ServiceTokens).
    """

    def __init__(self, url: str, timeout_s: float = 10.0, transport: httpx.BaseTransport | None = None,
                 *, token: Callable[[], str | None]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"schema registry URL {url!r} is not an http(s) URL (set ACCORD_REGISTRY_URL=http://host:port)"
            )
        self.url = url.rstrip("/")
        self._token = token
        self._client = httpx.Client(
            # Connecting is retried (CONNECT_RETRIES): a restarted registry keeps its address.
            base_url=self.url, timeout=timeout_s, transport=transport or httpx.HTTPTransport(retries=CONNECT_RETRIES),
            headers={"Accept": f"{CONTENT_TYPE}, application/json"},
        )

    def close(self) -> None:
        self._client.close()

    def register(self, subject: str, schema: str) -> int:
        answer = self._call("POST", f"/subjects/{_segment(subject)}/versions",
                            {"schema": schema, "schemaType": "AVRO"})
        return answer.get("id", int)

    def schema_by_id(self, schema_id: int) -> str:
        return self._call("GET", f"/schemas/ids/{int(schema_id)}").get("schema", str)

    def set_compatibility(self, subject: str, mode: str) -> None:
        self._call("PUT", f"/config/{_segment(subject)}", {"compatibility": mode})

    def compatibility_problems(self, subject: str, schema: str) -> list[str]:
        """Why `schema` may not become the subject's next version (the registry's messages); [] when it may, also
        for a subject with no versions yet."""
        try:
            answer = self._call("POST", f"/compatibility/subjects/{_segment(subject)}/versions/latest?verbose=true",
                                {"schema": schema, "schemaType": "AVRO"})
        except RegistryError as exc:
            if exc.status == 404 and exc.error_code in (40401, 40402):  # no subject, or no live version: anything goes
                return []
            raise
        if answer.body.get("is_compatible") is True:
            return []
        messages = answer.body.get("messages")
        return [str(m) for m in messages] if isinstance(messages, list) and messages else ["incompatible"]

    def latest(self, subject: str) -> RegisteredSchema:
        answer = self._call("GET", f"/subjects/{_segment(subject)}/versions/latest")
        return RegisteredSchema(
            subject=answer.get("subject", str), version=answer.get("version", int),
            schema_id=answer.get("id", int), schema=answer.get("schema", str),
        )

    def version(self, subject: str, version: int) -> RegisteredSchema:
        answer = self._call("GET", f"/subjects/{_segment(subject)}/versions/{int(version)}")
        return RegisteredSchema(
            subject=answer.get("subject", str), version=answer.get("version", int),
            schema_id=answer.get("id", int), schema=answer.get("schema", str),
        )

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> _Answer:
        content = None if body is None else json.dumps(body)
        headers = {} if body is None else {"Content-Type": CONTENT_TYPE}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._client.request(method, path, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryError(0, NO_ERROR_CODE, f"{method} {self.url}{path}: {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise _error_from(response)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, Mapping):
            raise _unexpected(response, "the body is not a JSON object")
        return _Answer(response, answer)


@dataclass(frozen=True)
class _Answer:
    """A 2xx JSON object from the registry; `get` checks a field so callers never meet a KeyError."""

    response: httpx.Response
    body: Mapping[str, Any]

    def get(self, key: str, kind: type[T]) -> T:
        value = self.body.get(key)
        # bool is an int in Python, and never a valid id or version.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _unexpected(self.response, f"{key!r} missing or not {kind.__name__} in {json.dumps(self.body)[:300]}")
        return value


def _segment(subject: str) -> str:
    # Subjects may hold '/', '?' or spaces; each must stay inside one path segment.
    return quote(subject, safe="")


def _error_from(response: httpx.Response) -> RegistryError:
    """Confluent's `{"error_code": ..., "message": ...}` when present, else the status and body text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("error_code"), int) and "message" in body:
        return RegistryError(response.status_code, body["error_code"], str(body["message"]))
    return _unexpected(response, response.text.strip()[:500] or response.reason_phrase)


def _unexpected(response: httpx.Response, detail: str) -> RegistryError:
    request = response.request
    return RegistryError(response.status_code, NO_ERROR_CODE, f"{request.method} {request.url}: {detail}")
