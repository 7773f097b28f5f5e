"""An emergency level for a drill body alone: each drill body is the only body in a region of its own (its
`drill_region`), and a declarer the catalog names declares the level there through the governance API, so the
drill's disputes run at that level while every real body's level, and so every real dispute's deadlines, stay as
they are. The drill lifts it again when its check ends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from broker.domain.drills import drill_region
from broker.domain.ladder import Actor


class DeclaringCalls(Protocol):
    """The governance HTTP API, called as `actor`."""

    def call(self, method: str, path: str, actor: Actor, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        ...


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


def declare_drill_emergency(api: DeclaringCalls, catalog: Mapping[str, Any], body: str, run: str,
                            level: str = "emergency") -> Actor | None:
    """Declare `level` in drill body `body`'s own region as one of the catalog's declarers; who declared it (to lift
    it again), or None when the catalog names no declarer. The governance service refuses a drill region that holds
    any real body."""
    acting = declarer(catalog)
    if acting is None:
        return None
    api.call("POST", "/emergency", acting, {
        "scope": drill_region(body), "level": level,
        "reason": f"Accord drill {run}: {level} declared in drill body {body}'s own region, for the drill alone."})
    return acting


def lift_drill_emergency(api: DeclaringCalls, acting: Actor, body: str, run: str) -> None:
    """Lift the level declared in drill body `body`'s own region."""
    api.call("POST", "/emergency/lift", acting, {
        "scope": drill_region(body), "reason": f"Accord drill {run}: the drill's check has ended."})
