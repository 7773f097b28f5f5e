"""Policy state folded from the control topic: the applied catalog, revocations, emergency level and grants.

Only records signed by a trusted key are folded in (`admit`); see domain/control_signing.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from broker.domain.control_signing import KeyLookup, Refused, check
from broker.domain.ladder import LEVELS
from broker.domain.messages import ControlRecord
from broker.errors import PolicyEngineError

CATALOG_KEY = "catalog"
REVOCATION_PREFIX = "revocation/"
EMERGENCY_PREFIX = "emergency/"
GRANT_PREFIX = "grant/"
PSEUDONYM_KEY_PREFIX = "pseudonym-key/"


@dataclass(frozen=True)
class PolicyState:
    """Everything a plan depends on besides the policies themselves; `offset` is the next control offset to apply.

    Keys on the control topic (each key's latest signed value is the state):
    `catalog` → the compiled catalog; `revocation/<agreement>` → a revocation (a tombstone reinstates);
    `emergency/<scope>` → a declared level; `grant/<id>` → an agreement-shaped grant; `pseudonym-key/<subscriber>`
    (or `/*`) → an announced pseudonym key rotation `{version, previous, from}` (domain/pseudonyms.py).
    """

    catalog: Mapping[str, Any] | None = None
    revoked: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    emergency: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    grants: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    pseudonym_keys: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    offset: int = 0
    # key -> signed-at of the last record applied under it (tombstones included): an older one is a replay.
    signed_at: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def catalog_revision(self) -> str | None:
        return None if self.catalog is None else str(self.catalog.get("revision"))

    @property
    def emergency_level(self) -> str:
        """The national level."""
        return self.emergency.get("national", "normal")

    def level_for(self, subscriber: str) -> str:
        """The highest of the national level and the levels declared for the subscriber's regions (E12)."""
        body = ((self.catalog or {}).get("bodies") or {}).get(subscriber) or {}
        levels = [self.emergency_level, *(self.emergency.get(str(r), "normal") for r in body.get("regions") or ())]
        return max(levels, key=LEVELS.index)

    def plan_input(self, subscriber: str, role: str, stream: str, purpose: str, now: dt.datetime) -> dict[str, Any]:
        """The request OPA's `accord.plans.plan` answers for one subscription at `now`."""
        return {
            "subscriber": subscriber, "role": role, "stream": stream, "purpose": purpose,
            "time": rfc3339(now), "emergency_level": self.level_for(subscriber),
            "revoked": sorted(self.revoked), "grants": [dict(g) for _, g in sorted(self.grants.items())],
            "state_revision": self.offset,
        }


def admit(state: PolicyState, record: ControlRecord, keys: KeyLookup) -> tuple[PolicyState, Refused | None]:
    """The state after `record` if a trusted key signed it (and it is no replay), else the state as it was (only
    past the record) and why the record was refused. PolicyEngineError when a signed record cannot be applied."""
    verdict = check(record, keys, state.signed_at.get(record.key))
    if isinstance(verdict, Refused):
        return replace(state, offset=max(state.offset, record.offset + 1)), verdict
    after = apply(state, record.offset, record.key, record.value)
    return replace(after, signed_at=with_entry(after.signed_at, record.key, verdict.signed_at_us)), None


def apply(state: PolicyState, offset: int, key: str, value: Mapping[str, Any] | None) -> PolicyState:
    """The state after the control record at `offset`, whoever wrote it (`admit` checks that first); unknown keys
    are skipped (newer writers, older gates)."""
    after = replace(state, offset=max(state.offset, offset + 1))
    if key == CATALOG_KEY:
        document = None if value is None else value.get("document")
        if document is not None and not isinstance(document, Mapping):
            raise PolicyEngineError(f"control record {offset}: catalog document is not an object")
        return replace(after, catalog=document)
    if key.startswith(REVOCATION_PREFIX):
        return replace(after, revoked=with_entry(state.revoked, key[len(REVOCATION_PREFIX):], value))
    if key.startswith(GRANT_PREFIX):
        return replace(after, grants=with_entry(state.grants, key[len(GRANT_PREFIX):], value))
    if key.startswith(PSEUDONYM_KEY_PREFIX):
        if value is not None and not (isinstance(value.get("version"), int) and isinstance(value.get("from"), str)):
            raise PolicyEngineError(f"control record {offset}: a pseudonym key rotation needs a version and a time")
        return replace(after, pseudonym_keys=with_entry(state.pseudonym_keys, key[len(PSEUDONYM_KEY_PREFIX):], value))
    if key.startswith(EMERGENCY_PREFIX):
        level = None if value is None else str(value.get("level", "normal"))
        if level is not None and level not in LEVELS:
            raise PolicyEngineError(f"control record {offset}: emergency level {level!r} is not one of {LEVELS}")
        return replace(after, emergency=with_entry(state.emergency, key[len(EMERGENCY_PREFIX):], level))
    return after


def with_entry(current: Mapping[str, Any], name: str, value: Any) -> Mapping[str, Any]:
    """A read-only copy of `current` with `name` set to `value`, or removed when `value` is None (a tombstone)."""
    updated = dict(current)
    if value is None:
        updated.pop(name, None)
    else:
        updated[name] = value
    return MappingProxyType(updated)


def rfc3339(moment: dt.datetime) -> str:
    """UTC with a `Z`, the form OPA's time.parse_rfc3339_ns and the catalog use."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
