"""Encoding one T1 record for 24 deliveries, each encoded on its own (before issue 18) against one body per distinct
projection (the gate's `_deliver_shared`: same schema form and shape, one body, each delivery's own schema id), in
one run and in process: no Kafka, no OPA.

The 24 deliveries are 12 DPH-tier (every field kept), 8 analyst-tier (LSOA, age band, sex) and 4 that pseudonymise
the NHS number (encoded per subscriber either way).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from benchmarks.serde import SCHEMA_TEXT, _best_rates, _records
from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.domain.plans import AGE_BAND, GENERALISE, KEEP, PSEUDONYMISE, FieldRule, Plan, Projector, Scope
from broker.domain.pseudonyms import Pseudonymiser, subscriber_key
from broker.services.delivery_table import encoding_form
from broker.services.serde import AvroSerializer, SerializationContext

STREAM = "ukhsa.positive-tests"
AREAS = frozenset({"E06000016"})
TIERS = (("dph", 12), ("analyst", 8), ("pseudonymised", 4))
Delivery = tuple[Projector, AvroSerializer, SerializationContext, str]  # projector, encoder, its topic, schema form


def _rules(tier: str, schema: dict[str, Any]) -> tuple[FieldRule, ...]:
    def rule(name: str, transform: str = KEEP, method: str | None = None, output: str | None = None,
             **params: str) -> FieldRule:
        return FieldRule(name, transform, method, output or name, params)
    if tier == "analyst":
        return (rule("sex"), rule("dob", GENERALISE, AGE_BAND, "age_band", at="specimen_date"), rule("lsoa"))
    kept = tuple(rule(field["name"]) for field in schema["fields"] if field["name"] != "nhs_number")
    return (rule("nhs_number", PSEUDONYMISE if tier == "pseudonymised" else KEEP), *kept)


def _deliveries(registry: InMemorySchemaRegistry) -> list[Delivery]:
    schema = json.loads(SCHEMA_TEXT)
    made = []
    for tier, n in TIERS:
        fields = _rules(tier, schema)
        for i in range(n):
            subscriber = f"council-{tier}-{i}"
            plan = Plan(subscriber, "dph", STREAM, "health-protection", True, (), (f"a-{subscriber}",), fields,
                        ("utla",), AREAS, None, "bench/1", scopes=(Scope((f"a-{subscriber}",), AREAS, fields),))
            project = Projector(plan, schema, Pseudonymiser(subscriber_key(b"bench-secret", subscriber), STREAM),
                                today=lambda: dt.date(2020, 6, 26))
            made.append((project, AvroSerializer(registry, json.dumps(project.schema)),
                         SerializationContext(plan.topic), encoding_form(project.schema)))
    return made


def run(n: int = 2_000, repeats: int = 5) -> dict[str, Any]:
    registry = InMemorySchemaRegistry()
    deliveries = _deliveries(registry)
    records = _records(n)

    def each_on_its_own(row: dict[str, Any]) -> list[bytes | None]:
        out = []
        for project, encode, ctx, _ in deliveries:
            shape = project.shape(AREAS)
            assert shape is not None
            out.append(encode(shape(row), ctx))
        return out

    def once_per_projection(row: dict[str, Any]) -> list[bytes | None]:
        out: list[bytes | None] = []
        encoded: dict[tuple[str, str], bytes] = {}
        for project, encode, ctx, form in deliveries:
            shape = project.shape(AREAS)
            assert shape is not None
            if shape.key is None:
                out.append(encode(shape(row), ctx))
                continue
            body = encoded.get((form, shape.key))
            if body is None:
                payload = encode(shape(row), ctx)
                assert payload is not None
                out.append(encoded.setdefault((form, shape.key), payload))
            else:
                out.append(encode.reframe(body, ctx))
        return out

    assert each_on_its_own(records[3]) == once_per_projection(records[3])  # byte for byte, headers included
    contenders: dict[str, Callable[[dict[str, Any]], object]] = {"before": each_on_its_own,
                                                                 "after": once_per_projection}
    rates = _best_rates(contenders, records, repeats)
    per_record = len(deliveries)
    return {"scenario": "encode-t1-24-deliveries", "records": n, "repeats": repeats,
            "deliveries_per_record": per_record,
            "distinct_bodies_per_record": 2 + dict(TIERS)["pseudonymised"],
            "before_records_per_s": round(rates["before"]), "after_records_per_s": round(rates["after"]),
            "before_deliveries_per_s": round(rates["before"] * per_record),
            "after_deliveries_per_s": round(rates["after"] * per_record),
            "ratio_after_vs_before": round(rates["after"] / rates["before"], 3)}
