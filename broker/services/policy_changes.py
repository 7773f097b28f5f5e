"""Policy changes announced on the control topic: a catalog applied, an agreement revoked, a level declared.

Each change names the verified person who made it (an Actor from their token, never free text) and is also written
to the audit topic, after its control record so the audit record names its offset. The writer signs control
records (security/control_keys.py); only the governance service holds that key and may write the topic.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from broker.domain.audit_records import CATALOG_CHANGE, catalog_change, catalog_contents
from broker.domain.control import (
    CATALOG_KEY,
    EMERGENCY_PREFIX,
    PSEUDONYM_KEY_PREFIX,
    REVOCATION_PREFIX,
    PolicyState,
    rfc3339,
)
from broker.domain.ladder import LEVELS, Actor
from broker.domain.pseudonyms import ALL_SUBSCRIBERS, key_in_force
from broker.domain.topics import AUDIT_TOPIC, STATUS_TOPIC
from broker.errors import ConfigError, GovernanceError, NotFoundError, ServiceError
from broker.services.planner import CATALOG_PATH, PolicyEngine

COMPILED_PARTS = ("revision", "bodies", "streams", "agreements")  # what a compiled catalog has at least


class ControlAppender(Protocol):
    def append(self, key: str, value: dict[str, Any] | None, topic: str = ..., timeout_s: float = ...
               ) -> tuple[int, int]: ...


class PolicySource(Protocol):
    """The control topic as folded so far, signed records only (services/governance.PolicyView has the same shape)."""

    def current(self) -> PolicyState: ...


@dataclass(frozen=True)
class Announced:
    """Where a change sits on the control topic; gates report enforcement against `offset`."""

    key: str
    offset: int
    timestamp_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "offset": self.offset, "timestamp_ms": self.timestamp_ms}


def apply_catalog(writer: ControlAppender, engine: PolicyEngine, document: Mapping[str, Any], by: Actor) -> Announced:
    """Announce the compiled catalog (signed by the writer), then push it to OPA so the API guards know its bodies
    before a gate does; gates push it to their own OPA if it is missing there."""
    value = {"kind": "catalog", "revision": document.get("revision"), "document": dict(document),
             "by": by.to_json(), "at": _now()}
    announced = _append(writer, CATALOG_KEY, value)
    _audit(writer, announced, "catalog-applied", by, catalog_contents(dict(document)))
    engine.put_data(CATALOG_PATH, document)
    return announced


def revoke(writer: ControlAppender, agreement: str, reason: str, by: Actor) -> Announced:
    if not reason.strip():
        raise ConfigError("a revocation needs a reason (--reason)")
    value = {"kind": "revocation", "agreement": agreement, "reason": reason, "by": by.to_json(), "at": _now()}
    announced = _append(writer, f"{REVOCATION_PREFIX}{agreement}", value)
    _audit(writer, announced, "agreement-revoked", by, {"agreement": agreement, "reason": reason})
    return announced


def reinstate(writer: ControlAppender, agreement: str, by: Actor, reason: str = "") -> Announced:
    announced = _append(writer, f"{REVOCATION_PREFIX}{agreement}", None)
    _audit(writer, announced, "agreement-reinstated", by, {"agreement": agreement, "reason": reason})
    return announced


def rotate_pseudonym_key(writer: ControlAppender, subscriber: str, version: int, previous: int,
                         effective: dt.datetime, by: Actor) -> Announced:
    """Announce that `subscriber`'s (or everybody's, `*`) pseudonyms are made with key `version` from `effective`
    on; until then the gates go on with `previous`, and each delivery's header says which one made it."""
    value = {"kind": "pseudonym-key", "subscriber": subscriber, "version": version, "previous": previous,
             "from": rfc3339(effective), "by": by.to_json(), "at": _now()}
    announced = _append(writer, f"{PSEUDONYM_KEY_PREFIX}{subscriber}", value)
    _audit(writer, announced, "pseudonym-key-rotated", by,
           {"subscriber": subscriber, "version": version, "previous": previous, "from": rfc3339(effective)})
    return announced


def declare_level(writer: ControlAppender, level: str, by: Actor, scope: str = "national") -> Announced:
    if level not in LEVELS:
        raise ConfigError(f"emergency level {level!r} is not one of {', '.join(LEVELS)}")
    value = {"kind": "emergency", "scope": scope, "level": level, "by": by.to_json(), "at": _now()}
    announced = _append(writer, f"{EMERGENCY_PREFIX}{scope}", value)
    _audit(writer, announced, "emergency-declared", by, {"level": level, "scope": scope})
    return announced


class ControlChanges:
    """Control changes made through the governance API by a verified caller whom OPA has authorised: the catalog
    applied (the operator), an agreement of the catalog in force revoked or reinstated. The writer signs them."""

    def __init__(self, writer: ControlAppender, engine: PolicyEngine, policy: PolicySource) -> None:
        self._writer, self._engine, self._policy = writer, engine, policy

    def apply_catalog(self, actor: Actor, document: Mapping[str, Any]) -> Announced:
        for part in COMPILED_PARTS:
            if part not in document:
                raise ConfigError(f"the catalog has no {part!r}: send what `accord catalog compile` prints")
        return apply_catalog(self._writer, self._engine, document, actor)

    def revoke(self, actor: Actor, agreement: str, reason: str) -> Announced:
        self._known(agreement)
        return revoke(self._writer, agreement, reason, actor)

    def reinstate(self, actor: Actor, agreement: str, reason: str) -> Announced:
        self._known(agreement)
        return reinstate(self._writer, agreement, actor, reason)

    def rotate_pseudonym_key(self, actor: Actor, subscriber: str, version: int, notice: dt.timedelta
                             ) -> Announced:
        """A rotation to master key `version` (made beforehand in the secrets directory) after `notice`."""
        state = self._policy.current()
        bodies = (state.catalog or {}).get("bodies") or {}
        if subscriber != ALL_SUBSCRIBERS and subscriber not in bodies:
            raise NotFoundError(f"no body {subscriber!r} in the applied catalog (or `*` for every subscriber)")
        now = dt.datetime.now(dt.UTC)
        current, pending = key_in_force(state.pseudonym_keys, subscriber, now)
        announced = state.pseudonym_keys.get(subscriber) or state.pseudonym_keys.get(ALL_SUBSCRIBERS) or {}
        if pending is not None and announced.get("version") != version:
            raise GovernanceError(f"version {announced.get('version')} of {subscriber}'s pseudonym key is announced "
                                  f"for {rfc3339(pending)}; announce that version again to change its time, or wait")
        if version <= current:
            raise GovernanceError(f"{subscriber}'s pseudonyms are made with key version {current}; a rotation goes "
                                  f"to a later version, not {version}")
        if notice < dt.timedelta(0):
            raise GovernanceError("the notice of a rotation cannot be negative")
        return rotate_pseudonym_key(self._writer, subscriber, version, current, now + notice, actor)

    def _known(self, agreement: str) -> None:
        agreements = (self._policy.current().catalog or {}).get("agreements") or {}
        if agreement not in agreements:
            raise NotFoundError(f"no agreement {agreement!r} in the applied catalog")


def _append(writer: ControlAppender, key: str, value: dict[str, Any] | None) -> Announced:
    offset, timestamp_ms = writer.append(key, value)
    return Announced(key, offset, timestamp_ms)


def _audit(writer: ControlAppender, announced: Announced, change: str, by: Actor,
           details: dict[str, Any]) -> None:
    record = catalog_change(change, announced.key, announced.offset, by.to_json(), _now(), details)
    try:
        writer.append(CATALOG_CHANGE, record, topic=AUDIT_TOPIC)
    except ServiceError as exc:
        raise ServiceError(f"{announced.key} was announced at control offset {announced.offset} and takes effect, "
                           f"but its audit record was not written; announce it again to audit it: {exc}") from exc


def _now() -> str:
    return rfc3339(dt.datetime.now(dt.UTC))


class StatusReader(Protocol):
    def read(self, topic: str, max_records: int, timeout_s: float = ..., start_offset: int = ...) -> list[Any]: ...


def enforcement(reader: StatusReader, change: Announced, workers: int = 1, timeout_s: float = 10.0,
                status_topic: str = STATUS_TOPIC) -> list[dict[str, Any]]:
    """Wait until `workers` gate workers report having applied `change`; their status records, earliest first.

    Each status carries the worker's own `applied_ms`, so the latency is what the worker measured, not when this
    reader happened to look.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        seen: dict[str, dict[str, Any]] = {}
        for record in reader.read(status_topic, max_records=100_000, timeout_s=0.5):
            status = json.loads(record.value) if record.value else {}
            if int(status.get("offset", 0)) > change.offset and status.get("worker") not in seen:
                seen[str(status.get("worker"))] = status
        if len(seen) >= workers:
            return sorted(seen.values(), key=lambda s: int(s["applied_ms"]))
        if time.monotonic() > deadline:
            raise ServiceError(f"{len(seen)} of {workers} gate workers applied control offset {change.offset} "
                               f"within {timeout_s:.0f}s")
