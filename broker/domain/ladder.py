"""The escalation ladder as data: tiers, who decides at each, deadlines per emergency level, the decisive default."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from broker.errors import ConfigError

EmergencyLevel = Literal["normal", "enhanced", "emergency"]
LEVELS: tuple[str, ...] = get_args(EmergencyLevel)  # lowest first


@dataclass(frozen=True)
class Actor:
    """A person acting for a body in one of its roles."""

    body: str
    role: str
    person: str

    def to_json(self) -> dict[str, str]:
        return {"body": self.body, "role": self.role, "person": self.person}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Actor:
        return cls(body=str(value["body"]), role=str(value["role"]), person=str(value["person"]))


@dataclass(frozen=True)
class Tier:
    name: str
    title: str
    party: str | None          # "publisher": the disputed stream's owner decides (reconsideration)
    bodies: frozenset[str]
    roles: frozenset[str]
    approvals: int
    deadline_s: Mapping[str, int]

    def deadline(self, level: str) -> dt.timedelta:
        return dt.timedelta(seconds=self.deadline_s[level])

    def decider_bodies(self, publisher: str) -> frozenset[str]:
        return frozenset({publisher}) if self.party == "publisher" else self.bodies


@dataclass(frozen=True)
class Default:
    outcome: str               # "refusal-stands" | "provisional-grant"
    period: dt.timedelta | None


@dataclass(frozen=True)
class BreakGlass:
    levels: frozenset[str]
    roles: frozenset[str]
    period: dt.timedelta


@dataclass(frozen=True)
class Ladder:
    tiers: tuple[Tier, ...]
    decisive_default: Mapping[str, Default]
    grant_period: dt.timedelta
    appeal_window: Mapping[str, dt.timedelta]
    break_glass: BreakGlass
    deletion_deadline: Mapping[str, dt.timedelta]   # level → time a misrouted recipient has to delete
    declarers: Mapping[str, frozenset[str]]     # body → roles that may declare or lift an emergency

    @property
    def last(self) -> int:
        return len(self.tiers) - 1

    def bound(self, level: str) -> dt.timedelta:
        """The longest a dispute raised at `level` can stay undecided: every tier's deadline, one after another."""
        return sum((tier.deadline(level) for tier in self.tiers), dt.timedelta())

    def may_declare(self, actor: Actor) -> bool:
        return actor.role in self.declarers.get(actor.body, frozenset())

    @classmethod
    def from_catalog(cls, catalog: Mapping[str, Any]) -> Ladder:
        """The ladder of a compiled catalog document (keys `ladder` and `emergency_declarers`)."""
        try:
            return _ladder(catalog["ladder"], catalog.get("emergency_declarers", []))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(
                f"the applied catalog has no readable escalation ladder ({error!r}); "
                "add catalog/ladder.yaml and run `accord catalog apply`"
            ) from error


def _ladder(doc: Mapping[str, Any], declarers: list[Mapping[str, Any]]) -> Ladder:
    tiers = tuple(
        Tier(
            name=str(t["name"]), title=str(t.get("title") or t["name"]),
            party=t["deciders"].get("party"),
            bodies=frozenset(t["deciders"].get("bodies") or ()), roles=frozenset(t["deciders"]["roles"]),
            approvals=int(t["approvals"]), deadline_s={level: int(t["deadline_s"][level]) for level in LEVELS},
        )
        for t in doc["tiers"]
    )
    if not tiers:
        raise ValueError("the ladder has no tiers")
    # Every level up front, so a gap is a ConfigError now, not a KeyError when a last deadline passes.
    rules = {level: doc["decisive_default"][level] for level in LEVELS}
    defaults = {level: Default(outcome=str(d["outcome"]), period=_seconds(d.get("period_s")))
                for level, d in rules.items()}
    glass = doc["break_glass"]
    return Ladder(
        tiers=tiers, decisive_default=defaults, grant_period=dt.timedelta(seconds=int(doc["grant_period_s"])),
        appeal_window={level: dt.timedelta(seconds=int(doc["appeal_window_s"][level])) for level in LEVELS},
        break_glass=BreakGlass(levels=frozenset(glass["levels"]), roles=frozenset(glass["roles"]),
                               period=dt.timedelta(seconds=int(glass["period_s"]))),
        deletion_deadline={level: dt.timedelta(seconds=int(doc["deletion_deadline_s"][level])) for level in LEVELS},
        declarers={str(d["body"]): frozenset(d["roles"]) for d in declarers},
    )


def _seconds(value: Any) -> dt.timedelta | None:
    return None if value is None else dt.timedelta(seconds=int(value))


def higher(a: str, b: str) -> str:
    """The higher of two emergency levels."""
    return a if LEVELS.index(a) >= LEVELS.index(b) else b
