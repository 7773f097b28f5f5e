"""The Confluent Schema Registry REST API over Accord's registry (Avro only).

Every call but the root `GET /` (liveness, as in Confluent's) carries a bearer token and is authorised by OPA
(broker/api/auth.py, policies/authz): a body reads only the subjects it may see (its deliveries, what it publishes,
the streams of its agreements and of the templates), a schema by id only through one of them, and lists only
them; only Accord's services and a publisher, for its own subjects, may change anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.api.auth import LIVENESS, Guard, guarded, permitted
from broker.api.bodies import read_limited
from broker.domain.registry import SchemaVersion, parse_mode
from broker.domain.schemas import canonical_text
from broker.errors import RegistryError, ServiceError
from broker.services.registry import Registry

MEDIA = "application/vnd.schemaregistry.v1+json"
VISIBLE_SUBJECTS = "accord.authz.visible_subjects"
# (request, subjects) -> those the caller may see, in their order.
Visible = Callable[[Request, list[str]], list[str]]
ACCEPTED_BODIES = {"", "application/vnd.schemaregistry.v1+json", "application/vnd.schemaregistry+json",
                   "application/json", "application/octet-stream"}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type=MEDIA)


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").lower() == "true"


async def _body(request: Request, limit: int) -> dict[str, Any]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ACCEPTED_BODIES:
        raise RegistryError(415, 415, f"Unsupported content type {kind!r}; use {MEDIA}")
    raw = await read_limited(request, limit, lambda message: RegistryError(413, 413, message))
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(422, 42201, f"Request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RegistryError(422, 42201, "Request body must be a JSON object")
    return body


def _schema_of(body: dict[str, Any]) -> str:
    schema_type = body.get("schemaType", "AVRO")
    if schema_type != "AVRO":
        raise RegistryError(422, 42201, f"Invalid schema: schemaType {schema_type!r} is not supported (AVRO only)")
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema.strip():
        raise RegistryError(422, 42201, "Invalid schema: the body needs a non-empty string field 'schema'")
    if body.get("references"):
        raise RegistryError(422, 42201, "Invalid schema: schema references are not supported")
    return schema


def _schema_id(text: str) -> int:
    if not text.lstrip("-").isdigit():
        raise RegistryError(404, 40403, f"Schema {text} not found")
    return int(text)


def create_registry_app(registry: Registry, max_body_bytes: int = 1_048_576, *,
                        guard: Guard) -> FastAPI:
    """The app; `guard` checks callers (token and OPA)."""
    app = FastAPI(title="Accord schema registry", version="1",
                  description="Confluent Schema Registry REST API (Avro), storage in a compacted Kafka topic.",
                  **guarded(guard, "registry", lambda route, params: _resource(registry, params),
                            public=LIVENESS | {("GET", "/")}, basic=True))

    @app.exception_handler(RegistryError)
    async def registry_error(_: Request, exc: RegistryError) -> Response:
        return _json({"error_code": exc.error_code, "message": exc.message}, exc.status)

    @app.exception_handler(ServiceError)
    async def unavailable(_: Request, exc: ServiceError) -> Response:
        # Its Kafka did not answer (a broker restarting): Confluent's "error in the backend data store", retryable.
        answer = _json({"error_code": 50001, "message": str(exc).splitlines()[0]}, 503)
        answer.headers["Retry-After"] = "5"
        return answer

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        answer = _json({"error_code": exc.status_code, "message": str(exc.detail)}, exc.status_code)
        answer.headers.update(exc.headers or {})
        return answer

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return _json({"error_code": 422, "message": str(exc.errors())}, 422)

    @app.get("/")
    def root() -> Response:
        return _json({})

    def visible(request: Request, subjects: list[str]) -> list[str]:
        return permitted(guard, request, VISIBLE_SUBJECTS, "subjects", subjects)

    _subject_routes(app, registry, max_body_bytes, visible)
    _schema_routes(app, registry, visible)
    _config_routes(app, registry, max_body_bytes)
    return app


def _resource(registry: Registry, params: Mapping[str, str]) -> dict[str, Any]:
    """What OPA needs to decide on a schema by id: every subject that uses it, soft-deleted ones too."""
    if "schema_id" not in params:
        return {}
    try:
        schema_id = _schema_id(params["schema_id"])
        subjects = registry.read(lambda s: sorted({v.subject for v in s.usages(schema_id, deleted=True)}))
    except RegistryError:
        subjects = []  # unknown to everyone: a body is refused, a service gets the route's 404
    return {"schema": {"id": params["schema_id"], "subjects": subjects}}


def _subject_routes(app: FastAPI, registry: Registry, limit: int, visible: Visible) -> None:
    @app.get("/subjects")
    def subjects(request: Request) -> Response:
        return _json(visible(request, registry.read(lambda s: s.subjects(deleted=_flag(request, "deleted")))))

    @app.get("/subjects/{subject}/versions")
    def versions(subject: str, request: Request) -> Response:
        found = registry.read(lambda s: s.versions(subject, deleted=_flag(request, "deleted")))
        return _json([v.version for v in found])

    @app.post("/subjects/{subject}/versions")
    async def register(subject: str, request: Request) -> Response:
        entry = registry.register(subject, _schema_of(await _body(request, limit)))
        return _json({"id": entry.schema_id})

    @app.post("/subjects/{subject}")
    async def lookup(subject: str, request: Request) -> Response:
        schema = _schema_of(await _body(request, limit))
        entry = registry.read(lambda s: s.lookup(subject, canonical_text(schema), deleted=_flag(request, "deleted")))
        return _json(entry.as_json())

    @app.get("/subjects/{subject}/versions/{version}")
    def version(subject: str, version: str, request: Request) -> Response:
        entry = registry.read(lambda s: s.version(subject, version, deleted=_flag(request, "deleted")))
        return _json(entry.as_json())

    @app.get("/subjects/{subject}/versions/{version}/schema")
    def version_schema(subject: str, version: str, request: Request) -> Response:
        entry = registry.read(lambda s: s.version(subject, version, deleted=_flag(request, "deleted")))
        return Response(entry.schema, media_type=MEDIA)

    @app.delete("/subjects/{subject}")
    def delete_subject(subject: str, request: Request) -> Response:
        return _json(registry.delete_subject(subject, permanent=_flag(request, "permanent")))

    @app.delete("/subjects/{subject}/versions/{version}")
    def delete_version(subject: str, version: str, request: Request) -> Response:
        return _json(registry.delete_version(subject, version, permanent=_flag(request, "permanent")))

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    async def compatibility(subject: str, version: str, request: Request) -> Response:
        schema = _schema_of(await _body(request, limit))
        problems = registry.read(lambda s: s.check(subject, schema, version))
        answer: dict[str, Any] = {"is_compatible": not problems}
        if _flag(request, "verbose"):
            answer["messages"] = problems
        return _json(answer)


def _schema_routes(app: FastAPI, registry: Registry, visible: Visible) -> None:
    @app.get("/schemas/ids/{schema_id}")
    def by_id(schema_id: str) -> Response:
        return _json({"schema": registry.read(lambda s: s.schema(_schema_id(schema_id)))})

    @app.get("/schemas/ids/{schema_id}/schema")
    def raw_by_id(schema_id: str) -> Response:
        return Response(registry.read(lambda s: s.schema(_schema_id(schema_id))), media_type=MEDIA)

    def usages(schema_id: str, request: Request) -> list[SchemaVersion]:
        return registry.read(lambda s: s.usages(_schema_id(schema_id), deleted=_flag(request, "deleted")))

    @app.get("/schemas/ids/{schema_id}/subjects")
    def id_subjects(schema_id: str, request: Request) -> Response:
        return _json(visible(request, sorted({v.subject for v in usages(schema_id, request)})))

    @app.get("/schemas/ids/{schema_id}/versions")
    def id_versions(schema_id: str, request: Request) -> Response:
        found = usages(schema_id, request)
        shown = set(visible(request, sorted({v.subject for v in found})))
        return _json([{"subject": v.subject, "version": v.version} for v in found if v.subject in shown])


def _config_routes(app: FastAPI, registry: Registry, limit: int) -> None:
    async def level_of(request: Request) -> str:
        body = await _body(request, limit)
        level = body.get("compatibility", body.get("compatibilityLevel"))
        if not isinstance(level, str):
            raise RegistryError(422, 42203, "Invalid compatibility level: the body needs 'compatibility'")
        return parse_mode(level).value

    @app.get("/config")
    def get_global() -> Response:
        return _json({"compatibilityLevel": registry.read(lambda s: s.mode(None).value)})

    @app.put("/config")
    async def put_global(request: Request) -> Response:
        return _json({"compatibility": registry.set_config(None, await level_of(request))})

    @app.delete("/config")
    def delete_global() -> Response:
        return _json({"compatibilityLevel": registry.delete_config(None)})

    @app.get("/config/{subject}")
    def get_subject(subject: str, request: Request) -> Response:
        fallback = _flag(request, "defaultToGlobal")
        return _json({"compatibilityLevel": registry.read(lambda s: s.mode(subject, fallback).value)})

    @app.put("/config/{subject}")
    async def put_subject(subject: str, request: Request) -> Response:
        return _json({"compatibility": registry.set_config(subject, await level_of(request))})

    @app.delete("/config/{subject}")
    def delete_subject_config(subject: str) -> Response:
        registry.read(lambda s: s.mode(subject, default_to_global=False))
        return _json({"compatibilityLevel": registry.delete_config(subject)})
