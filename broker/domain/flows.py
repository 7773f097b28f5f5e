"""The shape every agreement-like flow has once compiled: a catalog agreement in OPA data, and a grant (a dispute's
decision, a break-glass) on the control topic. The sharing-plan policy, the gate's fences and the governance
service all read these keys."""

from __future__ import annotations

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
