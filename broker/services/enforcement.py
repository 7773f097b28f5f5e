"""Governance decisions put into force on the control topic: grants, revocations and reinstatements, declared
levels; and reconciliation, which writes whatever the governance topic has and the control topic lacks (a crash
between the two loses nothing)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.clock import Clock
from broker.domain.control import EMERGENCY_PREFIX, GRANT_PREFIX, REVOCATION_PREFIX, PolicyState
from broker.domain.disputes import stamp
from broker.domain.governance import GovernanceState
from broker.services.policy_changes import ControlAppender


class Enforcement:
    """Writes policy effects to the control topic; each write is returned as {key, offset, timestamp_ms}."""

    def __init__(self, control: ControlAppender, clock: Clock) -> None:
        self._control, self._clock = control, clock

    def effects(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The grant, grant withdrawals, revocations and reinstatements a decision or break-glass carries."""
        written = []
        if data.get("grant") is not None:
            grant = dict(data["grant"])
            written.append(self._write(f"{GRANT_PREFIX}{grant['id']}", grant))
        for ident in data.get("revoke_grants") or ():
            written.append(self._write(f"{GRANT_PREFIX}{ident}", None))
        for ident in data.get("revoke_agreements") or ():
            value = {"kind": "revocation", "agreement": ident, "reason": data.get("reason", ""),
                     "by": "governance", "at": stamp(self._clock())}
            written.append(self._write(f"{REVOCATION_PREFIX}{ident}", value))
        for ident in data.get("reinstate_agreements") or ():
            written.append(self._write(f"{REVOCATION_PREFIX}{ident}", None))
        return written

    def level(self, state: GovernanceState, scope: str) -> dict[str, Any]:
        """The level declared for `scope` (a tombstone once lifted)."""
        declaration = state.emergency.get(scope)
        value = None if declaration is None else {
            "kind": "emergency", "scope": scope, "level": declaration["level"], "by": "governance",
            "at": declaration["at"]}
        return self._write(f"{EMERGENCY_PREFIX}{scope}", value)

    def reconcile(self, state: GovernanceState, policy: PolicyState) -> None:
        """Write any grant, grant withdrawal or level that `state` has and the control topic (`policy`) lacks."""
        for ident, grant in state.grants.items():
            if policy.grants.get(ident) != grant:
                self._write(f"{GRANT_PREFIX}{ident}", dict(grant))
        for ident in (set(policy.grants) - set(state.grants)) & state.ended_grants:
            self._write(f"{GRANT_PREFIX}{ident}", None)
        for scope in set(state.emergency) | set(policy.emergency):
            if policy.emergency.get(scope) != state.emergency.get(scope, {}).get("level"):
                self.level(state, scope)

    def _write(self, key: str, value: dict[str, Any] | None) -> dict[str, Any]:
        offset, timestamp_ms = self._control.append(key, value)
        return {"key": key, "offset": offset, "timestamp_ms": timestamp_ms}
