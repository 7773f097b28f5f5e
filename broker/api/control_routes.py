"""The governance API's control changes: apply the catalog, revoke or reinstate an agreement.

These are the only way to change what the gates enforce besides dispute decisions: the caller's token says who
acts, OPA (`policies/authz`) decides whether they may (an operator applies the catalog; the agreement's
publisher's IG lead, a governance board member or the arbiter revoke and reinstate), and the control record and
its audit record name that verified person. The governance service signs the record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from broker.api.auth import caller
from broker.errors import NotFoundError
from broker.services.policy_changes import COMPILED_PARTS, ControlChanges

AGREEMENT_ROUTES = ("/agreements/{ident}/revoke", "/agreements/{ident}/reinstate")
CATALOG_ROUTE = "/catalog"
ROTATE_ROUTE = "/pseudonym-keys/rotate"


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=2, description="the new key version, whose master secret the operator made beforehand")
    subscriber: str = Field("*", description="the body whose pseudonyms change, or * for every subscriber")
    notice_s: int = Field(86_400, ge=0, description="seconds from now until the new key is used")


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(description="why delivery must stop (recorded, audited)", pattern=r"\S")


class ReinstateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", description="why delivery may resume (recorded, audited)")


class CatalogIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    catalog: dict[str, Any] = Field(description="the compiled catalog, as `accord catalog compile` prints it")

    @field_validator("catalog")
    @classmethod
    def _compiled(cls, catalog: dict[str, Any]) -> dict[str, Any]:
        if missing := [part for part in COMPILED_PARTS if part not in catalog]:
            raise ValueError(f"not a compiled catalog (no {', '.join(missing)}): send what `accord catalog "
                             "compile` prints")
        return catalog


def agreement_resource(catalog: Mapping[str, Any], ident: str) -> dict[str, Any]:
    """What OPA needs about the agreement a route acts on; NotFoundError (404) when the catalog has no such one."""
    agreement = (catalog.get("agreements") or {}).get(ident)
    if agreement is None:
        raise NotFoundError(f"no agreement {ident!r} in the applied catalog")
    return {"agreement": {"id": ident, "publisher": agreement.get("publisher"),
                          "subscriber": agreement.get("subscriber"), "stream": agreement.get("stream")}}


def add_control_routes(app: FastAPI, changes: ControlChanges) -> None:
    @app.post("/agreements/{ident}/revoke")
    def revoke(ident: str, body: RevokeIn, request: Request) -> dict[str, Any]:
        """Stop delivery under an agreement now; every gate worker enforces it within a second."""
        actor = caller(request).actor
        announced = changes.revoke(actor, ident, body.reason)
        return {"agreement": ident, "revoked": True, "control": announced.to_json(), "by": actor.to_json()}

    @app.post("/agreements/{ident}/reinstate")
    def reinstate(ident: str, body: ReinstateIn, request: Request) -> dict[str, Any]:
        """Lift a revocation."""
        actor = caller(request).actor
        announced = changes.reinstate(actor, ident, body.reason)
        return {"agreement": ident, "revoked": False, "control": announced.to_json(), "by": actor.to_json()}

    @app.post(ROTATE_ROUTE)
    def rotate(body: RotateIn, request: Request) -> dict[str, Any]:
        """Announce a pseudonym key rotation (the operator only): the gates switch at the announced time."""
        actor = caller(request).actor
        announced = changes.rotate_pseudonym_key(actor, body.subscriber, body.version,
                                                  dt.timedelta(seconds=body.notice_s))
        return {"subscriber": body.subscriber, "version": body.version, "control": announced.to_json(),
                "by": actor.to_json()}

    @app.put(CATALOG_ROUTE)
    def apply(body: CatalogIn, request: Request) -> dict[str, Any]:
        """Apply a compiled catalog (an operator only): announced to the gates and pushed to OPA."""
        actor = caller(request).actor
        announced = changes.apply_catalog(actor, body.catalog)
        return {"revision": body.catalog.get("revision"), "agreements": len(body.catalog.get("agreements") or {}),
                "control": announced.to_json(), "by": actor.to_json()}
