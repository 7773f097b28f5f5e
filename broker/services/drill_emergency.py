"""An emergency level declared for a drill body's own region (domain/drills.drill_region) and lifted again, through
the governance API as one of the catalog's emergency declarers: what break-glass, or an emergency ladder, needs
without changing any real body's level or any real dispute's deadlines."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from broker.domain.drills import is_drill_region
from broker.domain.ladder import Actor
from broker.errors import DrillError


class GovernanceCalls(Protocol):
    """The governance HTTP API, called as `actor` (services/drill_flows.GovernanceCalls)."""

    def call(self, method: str, path: str, actor: Actor, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        ...


@dataclass(frozen=True)
class DrillEmergency:
    """A level in force for a drill region, and who declared it (who lifts it)."""

    scope: str
    level: str
    declarer: Actor


def declarer(catalog: Mapping[str, Any]) -> Actor | None:
    """The first emergency declarer the applied catalog names (as its first role); None when it names none."""
    for entry in catalog.get("emergency_declarers") or ():
        roles = list(entry.get("roles") or ())
        if entry.get("body") and roles:
            body, role = str(entry["body"]), str(roles[0])
            return Actor(body, role, f"{role}@{body}.drill")
    return None


def declare_drill_emergency(api: GovernanceCalls, catalog: Mapping[str, Any], scope: str, level: str,
                            why: str) -> DrillEmergency:
    """Declare `level` for drill region `scope` only; DrillError for any other scope, or when the catalog names
    no declarer or the answer is not the level asked for."""
    if not is_drill_region(scope):
        raise DrillError(f"a drill declares an emergency only for a drill body's own region, never for {scope!r}")
    who = declarer(catalog)
    if who is None:
        raise DrillError("the applied catalog names no emergency declarer (ladder.yaml's emergency.declarers)")
    answer = api.call("POST", "/emergency", who, {"scope": scope, "level": level, "reason": why})
    if answer.get("level") != level:
        raise DrillError(f"declaring {level} for {scope} left it at {answer.get('level')!r}")
    return DrillEmergency(scope, level, who)


def lift_drill_emergency(api: GovernanceCalls, emergency: DrillEmergency, why: str) -> None:
    """Lift the drill region's level back to normal, as the declarer who declared it."""
    answer = api.call("POST", "/emergency/lift", emergency.declarer, {"scope": emergency.scope, "reason": why})
    if answer.get("level") != "normal":
        raise DrillError(f"lifting the emergency for {emergency.scope} left it at {answer.get('level')!r}")
