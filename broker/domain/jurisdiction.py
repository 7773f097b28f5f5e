"""Which local authorities a record belongs to, and whether a plan's row filter admits it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.domain.geography import LaTable
from broker.domain.plans import Plan
from broker.domain.trusts import TrustTable


@dataclass(frozen=True)
class Unresolved:
    """A record whose areas cannot be told without guessing; it goes to quarantine, never to a subscriber."""

    reason: str
    field: str
    candidates: tuple[str, ...] = ()   # the known LA codes it could belong to, with their upper tiers: who to tell


def resolve_areas(record: Mapping[str, Any], jurisdiction: Sequence[str], la: LaTable,
                  residence: str | None = None, trust_fields: frozenset[str] = frozenset(),
                  trusts: TrustTable | None = None) -> frozenset[str] | Unresolved:
    """Every known LA code in the record's jurisdiction fields plus its upper tier, or why there is none.

    `residence`, the LA the resident's LSOA lies in (residence.py), wins over the fields when the table knows it:
    they may name the testing site's council instead. A jurisdiction field among `trust_fields` names an NHS trust:
    the record lies in every district of the trust's footprint (`trusts`) and their upper tiers.
    """
    if residence is not None and la.is_known(residence):
        return frozenset({residence, la.upper_tier_of(residence) or residence})
    if not jurisdiction:
        return Unresolved("the stream names no jurisdiction fields", "")
    if named := [name for name in jurisdiction if name in trust_fields]:
        return _trust_areas(record, named, la, trusts or TrustTable())
    known = [(name, code) for name in jurisdiction if isinstance(code := record.get(name), str) and la.is_known(code)]
    if not known:
        seen = ", ".join(f"{name}={record.get(name)!r}" for name in jurisdiction)
        reason = f"no jurisdiction field holds a known LA code (saw {seen})"
        retired = [la.why_unknown(code) for name in jurisdiction
                   if isinstance(code := record.get(name), str) and la.retirement(code)]
        reason += "".join(f"; {why}" for why in dict.fromkeys(retired))
        return Unresolved(reason, _blamed_field(record, jurisdiction))
    uppers = {name: la.upper_tier_of(code) or code for name, code in known}
    if len(set(uppers.values())) > 1:
        return _disagreement(known, uppers)
    return frozenset({code for _, code in known} | set(uppers.values()))


def _trust_areas(record: Mapping[str, Any], names: Sequence[str], la: LaTable,
                 trusts: TrustTable) -> frozenset[str] | Unresolved:
    # A trust serves several districts, often under different counties: unlike LA fields, they never disagree.
    districts: set[str] = set()
    for name in names:
        code = record.get(name)
        if code is None:
            continue
        footprint = trusts.areas_of(code) if isinstance(code, str) else None
        if footprint is None:
            lookup = (f"the trust-to-area lookup ({trusts.source}, {len(trusts)} trusts)" if len(trusts)
                      else "no trust-to-area lookup (the geography has none)")
            return Unresolved(f"{name} {code!r} is no NHS trust of {lookup}: the row's areas cannot be told", name)
        districts |= footprint
    if not districts:
        return Unresolved(f"no trust field holds a trust code (saw {', '.join(f'{n}=None' for n in names)})",
                          names[0])
    return frozenset(districts | {la.upper_tier_of(code) or code for code in districts})


def admits(plan: Plan, areas: frozenset[str]) -> bool:
    """True when the plan allows sharing and the record lies in at least one of the plan's areas."""
    return plan.allow and not areas.isdisjoint(plan.areas)


def _blamed_field(record: Mapping[str, Any], jurisdiction: Sequence[str]) -> str:
    # The first field holding an unrecognised code is the one a publisher must fix; otherwise all were empty.
    return next((name for name in jurisdiction if record.get(name) is not None), jurisdiction[0])


def _disagreement(known: list[tuple[str, str]], uppers: Mapping[str, str]) -> Unresolved:
    # Describe a lower-tier code first: "ltla E07000129 is in E10000018 but utla says E06000016".
    ordered = sorted(known, key=lambda pair: uppers[pair[0]] == pair[1])
    lower_field, lower_code = ordered[0]
    other_field, other_code = next((name, code) for name, code in ordered if uppers[name] != uppers[lower_field])
    if uppers[lower_field] == lower_code:
        reason = f"{lower_field} {lower_code} and {other_field} {other_code} are different upper-tier authorities"
    else:
        beyond = f" (in {uppers[other_field]})" if uppers[other_field] != other_code else ""
        reason = f"{lower_field} {lower_code} is in {uppers[lower_field]} but {other_field} says {other_code}{beyond}"
    candidates = tuple(sorted({code for _, code in known} | set(uppers.values())))
    return Unresolved(reason, other_field, candidates)
