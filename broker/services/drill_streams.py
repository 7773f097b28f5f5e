"""Drill streams: each drilled template flow's stream gets a twin for the run (`<publisher>.drill-<run>-<name>`, the
real stream's schema registered under the twin's subject), named with a copy of the template in the drill's catalog.
Synthetic records go through the real ingest API as the publisher, the gate delivers them under the drill body's
grant, and the drill reads what the drill body received. No real agreement names the twin, so no real subscriber
can receive a drill record.

Pure helpers here decide what a subscriber's view must be (rows of its areas only; the plan's fields and
transforms); the ports reach the registry, the API, the delivery topics and the gates' status.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from broker.domain.drills import drill_stream, drill_template
from broker.domain.ladder import Actor
from broker.domain.topics import ingest_topic, value_subject
from broker.domain.transforms import age_band, mask, postcode_district
from broker.services.stream_schemas import SCHEMA_ID

Row = dict[str, Any]


@dataclass(frozen=True)
class Opaque:
    """A value the drill cannot compute (a pseudonym: the key is the gate's): present, and not the raw value."""

    raw: Any


class DrillData(Protocol):
    """What a drill needs of the deployment besides the governance API."""

    def stream_schema(self, catalog: Mapping[str, Any], stream: str) -> dict[str, Any]:
        """The registered Avro schema of `stream` as the applied `catalog` names it."""

    def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        """Register `schema` under `subject`; its global id."""

    def synthetic(self, stream: str, area: str, upper_tier: str, count: int, prefix: str, seed: int,
                  avoiding: Sequence[str] = ()) -> list[Row] | None:
        """`count` synthetic records of template stream `stream` resident in `area`, none of which lies in an area of
        `avoiding` too (a trust's report lies in every area the trust serves); None: no generator for it."""

    def publish(self, stream: str, publisher: Actor, records: Sequence[Row]) -> list[dict[str, Any]]:
        """Publish through the ingest API as `publisher`; each record's outcome (status, topic, partition,
        offset)."""

    def delivered(self, topic: str, reader: tuple[str, str] | None = None) -> list[tuple[Row, dict[str, bytes]]]:
        """Every record on delivery topic `topic` now (read_committed, decoded), with its headers; [] before the
        topic exists. As the drill's own principal, or as `reader`'s (subscriber, role) login once `login` made it;
        DeliveryRefused when Kafka refuses that login the topic."""

    def login(self, subscriber: str, role: str) -> str:
        """Make the role's own Kafka login where Accord keeps the users (the local stack); who reads as `reader`."""

    def retire_login(self, subscriber: str, role: str) -> None:
        """Remove the login `login` made (nothing where it made none)."""

    def gate_behind(self, stream: str) -> int | None:
        """Records of `stream`'s ingest topic the gate group has not processed; None before it committed on it."""

    def enforced_at_ms(self, control_offset: int, timeout_s: float) -> int | None:
        """When (epoch ms, the worker's own clock) the first gate worker applied control records up to
        `control_offset`; None when none did within `timeout_s`."""

    def control_end(self) -> int:
        """The control topic's end offset now (where the next policy change will be written)."""

    def control_written(self, key: str, since: int, timeout_s: float) -> dict[str, int] | None:
        """Where the first control record under `key` at offset `since` or later was written (offset,
        timestamp_ms); None when none was within `timeout_s`."""


@dataclass(frozen=True)
class DrillStream:
    """One flow's twin: its stream id, the template copy naming it, and the catalog parts added for it."""

    real: str
    stream: str
    template: str
    entry: dict[str, Any]
    template_entry: dict[str, Any]


def make_twin(data: DrillData, catalog: Mapping[str, Any], template_id: str, run: str) -> DrillStream:
    """Register the twin's schema (the real stream's, renamed) and build its catalog entries."""
    template = dict(catalog["templates"][template_id])
    real = str(template["stream"])
    twin = drill_stream(real, run)
    subject = value_subject(ingest_topic(twin))
    schema = {**data.stream_schema(catalog, real), "accord.stream": twin}
    schema_id = data.register(subject, schema)
    entry = {**catalog["streams"][real], "subject": subject, SCHEMA_ID: schema_id}
    copy = {**template, "stream": twin, "title": f"Accord drill {run}: {template.get('title', template_id)}"}
    return DrillStream(real, twin, drill_template(template_id, run), entry, copy)


def with_twin(catalog: Mapping[str, Any], twin: DrillStream) -> dict[str, Any]:
    return {**catalog, "streams": {**catalog["streams"], twin.stream: twin.entry},
            "templates": {**catalog["templates"], twin.template: twin.template_entry}}


def tier_of(template: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The tier a drill asks for: the template's minimised tier, else its only (or first) one."""
    tiers = list(template.get("tiers") or [])
    named = template.get("minimised_tier")
    return next((t for t in tiers if t.get("name") == named), tiers[0] if tiers else None)


def requestable(tier: Mapping[str, Any], stream_fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a request from `tier` may name, with their rules: the tier's own (but what it drops), and where
    it keeps the others, the stream's other fields that are no direct identifier (as an access request allows)."""
    named: Mapping[str, Mapping[str, Any]] = tier.get("fields") or {}
    rules = {name: dict(rule) for name, rule in named.items() if rule.get("transform") != "drop"}
    if tier.get("other_fields") == "keep":
        rules.update({name: {"transform": "keep", "as": name, "method": None, "params": {}}
                      for name, spec in stream_fields.items()
                      if name not in named and "direct-identifier" not in ((spec or {}).get("tags") or [])})
    return rules


def granted(tier: Mapping[str, Any], stream_fields: Mapping[str, Any]) -> dict[str, Any]:
    """The tier of the grant a request for every requestable field of `tier` makes: those fields, nothing else."""
    return {**tier, "fields": requestable(tier, stream_fields), "other_fields": "drop"}


def expected_view(tier: Mapping[str, Any], stream_fields: Sequence[str], published: Row) -> Row:
    """What the plan of `tier` delivers of `published`: each named field under its `as` name, transformed; the
    stream's other fields kept or dropped as `other_fields` says; a value the drill cannot compute, Opaque."""
    named: Mapping[str, Mapping[str, Any]] = tier.get("fields") or {}
    view: Row = {}
    for name, rule in named.items():
        if rule.get("transform") != "drop":
            view[str(rule.get("as") or name)] = _transformed(rule, published.get(name), published)
    if tier.get("other_fields") == "keep":
        view.update({name: published.get(name) for name in stream_fields if name not in named})
    return view


def _transformed(rule: Mapping[str, Any], value: Any, row: Row) -> Any:
    transform, method, params = rule.get("transform"), rule.get("method"), rule.get("params") or {}
    if transform == "keep":
        return value
    if transform == "mask":
        return mask(value, int(params.get("keep_last", 0)))
    if transform == "generalise" and method == "age-band":
        return age_band(_date(value), _date(row.get(str(params.get("at")))))
    if transform == "generalise" and method == "postcode-district":
        return postcode_district(value)
    return Opaque(value)


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.date) or value is None:
        return value
    return dt.date.fromisoformat(str(value))


def view_problems(expected: Row, got: Row) -> list[str]:
    """How a delivered row differs from what the plan says it must be ([] when it is the plan's)."""
    problems = []
    if extra := sorted(set(got) - set(expected)):
        problems.append(f"fields the plan does not give: {', '.join(extra)}")
    if missing := sorted(set(expected) - set(got)):
        problems.append(f"fields the plan gives but missing: {', '.join(missing)}")
    for name in sorted(set(expected) & set(got)):
        want, have = expected[name], got[name]
        if isinstance(want, Opaque):
            if have is None or _text(have) == _text(want.raw):
                problems.append(f"{name} is not transformed")
        elif _text(want) != _text(have):
            problems.append(f"{name} is {have!r}, the plan makes it {want!r}")
    return problems


def _text(value: Any) -> str | None:
    """A value as text, dates and times in ISO 8601 (as published), so a decoded delivery compares with it."""
    if isinstance(value, dt.date):
        return value.isoformat()
    return None if value is None else str(value)


def source_of(outcome: Mapping[str, Any]) -> bytes:
    """The `accord.source` header the deliveries of a published record carry."""
    return f"{outcome['topic']}/{outcome['partition']}/{outcome['offset']}".encode()
