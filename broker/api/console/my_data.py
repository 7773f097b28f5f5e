"""My data: a subscriber's subscriptions (agreements and grants giving its body and role a stream), a preview of the
newest records it was delivered and a CSV download, read by the pull API's use case for the person's verified body
and role, never for a body or role the page is asked about."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from broker.api.auth import caller
from broker.api.console.app import Console, Pages
from broker.api.deliveries import csv_of
from broker.domain.control import PolicyState
from broker.domain.fences import sources
from broker.domain.json_avro import to_json
from broker.errors import DeliveryRefused, ServiceError
from broker.services.deliveries import MAX_LIMIT, Deliveries, Page

PREVIEW = 10
DOWNLOAD_LIMIT = 200_000   # rows in one CSV download; the pull API's cursor reads beyond it


def subscriptions(state: PolicyState, body: str, role: str, now: dt.datetime) -> list[dict[str, Any]]:
    """Each agreement or grant for `body` in `role`: stream, fields, areas, expiry and whether it is in force."""
    flows: dict[str, Mapping[str, Any]] = dict((state.catalog or {}).get("agreements") or {})
    flows |= {f"grant/{ident}": grant for ident, grant in state.grants.items()}
    rights = {source.ident: source for source in sources(state)}
    found = []
    for ident, flow in sorted(flows.items()):
        tier = _tier(flow, role)
        if flow.get("subscriber") != body or tier is None or ident not in rights:
            continue
        right = rights[ident]
        fields = sorted(str((rule or {}).get("as") or name) for name, rule in (tier.get("fields") or {}).items()
                        if (rule or {}).get("transform") != "drop")
        state_text = ("in force" if right.in_force(now) else
                      "revoked" if right.revoked_at is not None else
                      "not yet begun" if now < right.starts else "expired")
        found.append({"id": ident, "stream": str(flow.get("stream")), "fields": fields,
                      "other_fields": tier.get("other_fields") == "keep",
                      "areas": list((flow.get("row_scope") or {}).get("areas") or ()),
                      "valid_until": right.ends.strftime("%d %B %Y at %H:%M UTC"), "state": state_text,
                      "in_force": right.in_force(now)})
    return found


def _tier(flow: Mapping[str, Any], role: str) -> Mapping[str, Any] | None:
    for tier in flow.get("tiers") or ():
        if role in (tier.get("roles") or ()):
            return tier if isinstance(tier, Mapping) else None
    return None


def add_my_data(app: FastAPI, console: Console, pages: Pages, clock: Callable[[], dt.datetime]) -> None:
    deliveries = console.deliveries

    @app.get("/my-data")
    def my_data(request: Request) -> Response:
        identity = caller(request)
        found = subscriptions(console.policy(), identity.body, identity.role, clock())
        for entry in found:
            entry["lag"] = _lag(console.lag, str(entry["stream"]))
        return pages.render(request, "my_data.html", "My data", current="/my-data", subscriptions=found)

    @app.get("/my-data/{stream}")
    def stream_preview(stream: str, request: Request) -> Response:
        identity = caller(request)
        try:
            page = deliveries.latest(identity.body, identity.role, stream, PREVIEW)
        except DeliveryRefused as exc:
            raise HTTPException(403, str(exc)) from None
        except ServiceError:
            raise HTTPException(503, "your deliveries cannot be read just now; try again in a minute") from None
        records = [to_json(r.value) for r in page.records][-PREVIEW:]
        columns = page.fields(deliveries.schema_fields(page.topic))
        return pages.render(request, "my_data_stream.html", f"Latest records of {stream}", current="/my-data",
                            stream=stream, records=records, columns=columns)

    @app.get("/my-data/{stream}/records.csv")
    def download(stream: str, request: Request) -> Response:
        identity = caller(request)
        try:
            page = _everything(deliveries, identity.body, identity.role, stream)
        except DeliveryRefused as exc:
            raise HTTPException(403, str(exc)) from None
        except ServiceError:
            raise HTTPException(503, "your deliveries cannot be read just now; try again in a minute") from None
        name = f"{stream}.csv".replace('"', "")
        return Response(csv_of(page, deliveries), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _everything(deliveries: Deliveries, body: str, role: str, stream: str) -> Page:
    """Every record the topic keeps, page after page as the pull API hands them over, up to DOWNLOAD_LIMIT."""
    page = deliveries.page(body, role, stream, None, MAX_LIMIT)
    records = list(page.records)
    while page.records and len(records) < DOWNLOAD_LIMIT:
        page = deliveries.page(body, role, stream, page.next_cursor, MAX_LIMIT)
        records += page.records
    return Page(records[:DOWNLOAD_LIMIT], page.next_cursor, page.topic, {})


def _lag(lag: Callable[[str], int | None], stream: str) -> str:
    try:
        behind = lag(stream)
    except ServiceError:
        return "cannot be measured just now"
    if behind is None:
        return "no gate worker has processed this stream yet"
    if behind == 0:
        return "none: every record published to the stream has been through the gate"
    return f"{behind} record{'s' if behind != 1 else ''} published to the stream not yet through the gate"
