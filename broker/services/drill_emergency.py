"""An emergency level for a drill body alone: each drill body is the only body in a region of its own (its
`drill_region`), and a declarer the catalog names declares the level there through the governance API, so the
drill's checks (break-glass, an emergency ladder) run at that level while every real body's level, and so every
real dispute's deadlines, stay as they are. The drill lifts it again when its check ends."""

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
    """A person who may declare a level: the first of the catalog's emergency declarers whose body the catalog has
    with the declaring role; None when it names none."""
    bodies = catalog.get("bodies") or {}
    for entry in catalog.get("emergency_declarers") or ():
        body = str(entry.get("body"))
        roles = [r for r in entry.get("roles") or () if r in ((bodies.get(body) or {}).get("roles") or ())]
        if roles:
            return Actor(body, str(roles[0]), f"{roles[0]}@{body}.drill")
    return None


def declare_drill_emergency(api: GovernanceCalls, catalog: Mapping[str, Any], scope: str, level: str,
                            why: str) -> DrillEmergency:
    """Declare `level` for drill region `scope` only; DrillError for any other scope, or when the catalog names
    no declarer or the answer is not the level asked for. The governance service refuses a drill region that holds
    any real body."""
    if not is_drill_region(scope):
        raise DrillError(f"a drill declares an emergency only for a drill body's own region, never for {scope!r}")
    who = declarer(catalog)
    if who is None:
        raise DrillError("the applied catalog names no emergency declarer (ladder.yaml's emergency.declarers) "
                         "the drill could declare as")
    answer = api.call("POST", "/emergency", who, {"scope": scope, "level": level, "reason": why})
    if answer.get("level") != level:
        raise DrillError(f"declaring {level} for {scope} left it at {answer.get('level')!r}")
    return DrillEmergency(scope, level, who)


def lift_drill_emergency(api: GovernanceCalls, emergency: DrillEmergency, why: str) -> None:
    """Lift the drill region's level back to normal, as the declarer who declared it."""
    answer = api.call("POST", "/emergency/lift", emergency.declarer, {"scope": emergency.scope, "reason": why})
    if answer.get("level") != "normal":
        raise DrillError(f"lifting the emergency for {emergency.scope} left it at {answer.get('level')!r}")
