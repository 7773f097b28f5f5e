"""The shape every agreement-like flow has once compiled: a catalog agreement in OPA data, and a grant (a dispute's
decision, a break-glass) on the control topic. The sharing-plan policy, the gate's fences and the governance
service all read these keys."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, TypedDict


class Tier(TypedDict):
    name: str
    roles: list[str]
    other_fields: str
    fields: dict[str, Any]


class Flow(TypedDict, total=False):
    """A compiled agreement (`catalog.agreements[id]`) or a grant (`grant/<id>` on the control topic)."""

    id: str                              # grants only: the grant's id
    template: str | None
    publisher: str | None
    subscriber: str
    stream: str
    purpose: str
    legal_basis: list[str]
    tiers: list[Tier]
    row_scope: dict[str, list[str]]
    required_fields: list[str]
    suppression: dict[str, Any] | None   # small-number suppression of its cells (domain/suppression.py)
    national_data_opt_out: dict[str, Any]  # agreements: {applies, why}; a grant has none (docs/sharing-plans.md)
    valid_from: str                      # RFC 3339
    valid_until: str                     # when it stops being in force (the legal basis's end if earlier)
    signed_valid_until: str              # agreements: the end their signatories signed
    legal_basis_until: str | None        # agreements: the day the legal basis lapses
    retention_s: int | None              # how long delivery topics keep what they were sent
    review_date: str
    emergency_level_required: str
    signatories: list[dict[str, str]]
    source: dict[str, str]               # grants: where it came from (a dispute)
    backfill: str                        # history asked for on coming into force: P28D or a date


def legal_basis_ends_at(flow: Mapping[str, Any]) -> dt.datetime | None:
    """When a flow's legal basis stops: the end (UTC) of its `legal_basis_until` day, as the compiler caps
    `valid_until`; None without one."""
    until = flow.get("legal_basis_until")
    if not until:
        return None
    return dt.datetime.combine(dt.date.fromisoformat(str(until)) + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
