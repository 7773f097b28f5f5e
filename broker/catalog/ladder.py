"""The escalation ladder checked against the bodies and compiled to the `ladder` and `emergency_declarers` keys."""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Callable, Iterable
from typing import Any

from broker.catalog.loader import Problems
from broker.catalog.models import (
    LADDER,
    Body,
    Catalog,
    DecisiveDefault,
    DecisiveDefaults,
    Declarer,
    Ladder,
    LadderTier,
    Levels,
    Origin,
)
from broker.domain.ladder import LEVELS

# Looks a body up by id, reporting an unknown one at the given `file:line: path` (the compiler's `_Context.body`).
BodyLookup = Callable[[str, str], Body | None]


def compile_ladder(catalog: Catalog, body: BodyLookup, problems: Problems) -> dict[str, Any]:
    """`{"ladder": ..., "emergency_declarers": ...}` of docs/sharing-plans.md; problems are added with file:line."""
    origin = catalog.origins.get(LADDER) or Origin(file="ladder.yaml")
    if catalog.ladder is None:
        problems.add(origin.at(), "no escalation ladder; add ladder.yaml (catalog/README.md shows its keys)")
        return {}
    ladder, glass = catalog.ladder.ladder, catalog.ladder.ladder.break_glass
    _check_tier_names(ladder, origin, problems)
    tiers = [_tier(tier, index, origin, body, problems) for index, tier in enumerate(ladder.tiers)]
    _check_break_glass_roles(glass.roles, catalog, origin, problems)
    compiled = {
        "tiers": tiers,
        "decisive_default": _defaults(ladder.decisive_default),
        "grant_period_s": _seconds(ladder.grant_period),
        "appeal_window_s": _per_level(ladder.appeal_window),
        "deletion_deadline_s": _per_level(ladder.deletion_deadline),
        "break_glass": {"levels": [level for level in LEVELS if level in glass.levels], "roles": sorted(glass.roles),
                        "period_s": _seconds(glass.period)},
    }
    declarers = _declarers(catalog.ladder.emergency.declarers, origin, body, problems)
    return {"ladder": compiled, "emergency_declarers": declarers}


def _check_break_glass_roles(roles: tuple[str, ...], catalog: Catalog, origin: Origin, problems: Problems) -> None:
    held = {role for entry in catalog.bodies.values() for role in entry.roles}
    for index, role in enumerate(roles):
        if role not in held:
            problems.add(origin.at("ladder", "break_glass", "roles", index),
                         f"no body holds role {role!r}{_hint(role, held)}; fix the role or add it in bodies.yaml "
                         "to the bodies that may break the glass")


def _check_tier_names(ladder: Ladder, origin: Origin, problems: Problems) -> None:
    first: dict[str, int] = {}
    for index, tier in enumerate(ladder.tiers):
        if tier.name in first:
            problems.add(origin.at("ladder", "tiers", index, "name"),
                         f"tier name {tier.name!r} is already used by ladder.tiers.{first[tier.name]}; "
                         "tier names must be unique, rename one")
        first.setdefault(tier.name, index)


def _tier(tier: LadderTier, index: int, origin: Origin, body: BodyLookup, problems: Problems) -> dict[str, Any]:
    deciders = tier.deciders
    if deciders.bodies is not None:
        # A publisher's roles vary with the disputed stream, so only named bodies can be checked here.
        _check_deciders(deciders.bodies, deciders.roles, ("ladder", "tiers", index, "deciders"), origin, body,
                        problems)
    return {
        "name": tier.name, "title": tier.title,
        "deciders": {"party": deciders.party, "bodies": sorted(deciders.bodies or ()), "roles": sorted(deciders.roles)},
        "approvals": tier.approvals, "deadline_s": _per_level(tier.deadlines),
    }


def _check_deciders(bodies: Iterable[str], roles: tuple[str, ...], path: tuple[str | int, ...], origin: Origin,
                    body: BodyLookup, problems: Problems) -> None:
    """Every named body must hold every role, so that each one counts towards the approvals."""
    found = {index: (ident, entry) for index, ident in enumerate(bodies)
             if (entry := body(ident, origin.at(*path, "bodies", index))) is not None}
    for role_index, role in enumerate(roles):
        lacking = [(index, ident) for index, (ident, entry) in found.items() if role not in entry.roles]
        if found and len(lacking) == len(found):
            # Held by none of them: the role is likely misspelt, so say it once at the role.
            known = {held for _, entry in found.values() for held in entry.roles}
            problems.add(origin.at(*path, "roles", role_index),
                         f"none of the named bodies holds role {role!r}{_hint(role, known)}; fix the role or add "
                         "it to the bodies in bodies.yaml")
            continue
        for index, ident in lacking:
            problems.add(origin.at(*path, "bodies", index),
                         f"{ident} does not hold role {role!r}, so it could never approve; add the role to {ident} "
                         "in bodies.yaml or remove it from the deciders")


def _declarers(declarers: tuple[Declarer, ...], origin: Origin, body: BodyLookup,
               problems: Problems) -> list[dict[str, Any]]:
    first: dict[str, int] = {}
    for index, declarer in enumerate(declarers):
        where = ("emergency", "declarers", index)
        if declarer.body in first:
            problems.add(origin.at(*where, "body"), f"{declarer.body} is already listed at emergency.declarers."
                                                    f"{first[declarer.body]}; list each body once with all its roles")
        first.setdefault(declarer.body, index)
        entry = body(declarer.body, origin.at(*where, "body"))
        for role_index, role in enumerate(declarer.roles):
            if entry is not None and role not in entry.roles:
                problems.add(origin.at(*where, "roles", role_index),
                             f"{declarer.body} does not hold role {role!r}{_hint(role, entry.roles)}; add the role "
                             f"to {declarer.body} in bodies.yaml or fix it")
    return sorted(({"body": d.body, "roles": sorted(d.roles)} for d in declarers), key=lambda d: str(d["body"]))


def _hint(role: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(role, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _defaults(defaults: DecisiveDefaults) -> dict[str, dict[str, Any]]:
    chosen: dict[str, DecisiveDefault] = {level: getattr(defaults, level) for level in LEVELS}
    return {level: {"outcome": default.outcome,
                    "period_s": None if default.period is None else _seconds(default.period)}
            for level, default in chosen.items()}


def _per_level(levels: Levels) -> dict[str, int]:
    return {level: _seconds(getattr(levels, level)) for level in LEVELS}


def _seconds(value: dt.timedelta) -> int:
    return int(value.total_seconds())

