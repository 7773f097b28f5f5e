"""The gate's delivery table: for one policy state, each stream's allowed plans bound to their delivery topics,
with projector and encoder built once per plan content, and every decision audited when it changes."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.domain.audit_records import POLICY_DECISION, decision_record, decision_terms
from broker.domain.control import PolicyState, rfc3339
from broker.domain.partitions import partitions_of
from broker.domain.plans import Plan, Projector, projected_schema
from broker.domain.pseudonyms import FIRST_VERSION, Pseudonymiser, key_in_force, key_label, subscriber_key
from broker.domain.suppression import SuppressionRule
from broker.domain.topics import value_subject
from broker.services.planner import Decision
from broker.services.serde import AvroSerializer, SerializationContext

if TYPE_CHECKING:
    from broker.services.gate import GateParts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """An allowed plan bound to its delivery topic, with its projector and encoder built once."""

    plan: Plan
    topic: str
    areas: frozenset[str]
    project: Projector
    encode: AvroSerializer
    context: SerializationContext
    revision: bytes
    suppression: SuppressionRule | None = None  # aggregate cells: delivered per table, small counts hidden
    pseudonym_key: bytes = key_label(FIRST_VERSION)  # the key version its pseudonyms are made with (a header)
    # Its schema as it encodes (without the subscriber's namespace and doc): deliveries of a record with the same
    # form and shape share one encoded body. None: encoded on its own (suppressed counts are set per table).
    form: str | None = None


class DeliveryTable:
    """Re-planned by the gate whenever the policy state changes or a plan expires; never consulted per record
    beyond `by_stream`."""

    def __init__(self, parts: GateParts, worker: str, clock: Callable[[], dt.datetime]) -> None:
        self._p, self._worker, self._clock = parts, worker, clock
        self.by_stream: dict[str, list[Delivery]] = {}
        self._built: dict[tuple[Any, ...], tuple[Projector, AvroSerializer, str | None]] = {}
        self._topics: set[str] = set()
        self._decided: dict[tuple[str, ...], dict[str, Any]] = {}  # the last decision audited per subscription

    def replan(self, state: PolicyState, now: dt.datetime) -> list[dt.datetime]:
        """Plans for `state` at `now` (audited, topics created) in place of the old ones; the plans' expiries."""
        return self.install(state, now, self.decide(state, list(self._p.schemas), now))

    def decide(self, state: PolicyState, streams: list[str], now: dt.datetime, at_once: bool = True
               ) -> dict[str, list[Decision]]:
        """The policy engine's decisions for `streams` under `state` at `now`; changes nothing here, so it may run
        on another thread while the table delivers under its plans (then with `at_once=False`: see Planner)."""
        return self._p.planner.decisions_by_stream(state, streams, now, at_once)

    def install(self, state: PolicyState, now: dt.datetime, decisions: dict[str, list[Decision]]
                ) -> list[dt.datetime]:
        """`decisions` (from `decide`) as the table's plans, audited and with their topics made; their expiries."""
        deliveries: dict[str, list[Delivery]] = {}
        expiries: list[dt.datetime] = []
        for stream, decided in decisions.items():
            plans = _one_per_topic([d.plan for d in decided if d.plan.allow])
            deliveries[stream] = []
            for plan in plans:
                version, rotates_at = key_in_force(state.pseudonym_keys, plan.subscriber, now)
                deliveries[stream].append(self._delivery(stream, plan, suppression_of(state, plan.agreements), version))
                # re-planned when an announced rotation takes effect, as when a plan expires
                expiries.extend(t for t in (plan.expiry, rotates_at) if t is not None)
        self._audit_decisions([d for ds in decisions.values() for d in ds], state, now)
        # Each new delivery topic with its stream's delivery partitions, as the signed catalog states them.
        new_topics = {d.topic: partitions_of(state.catalog, stream).delivery
                      for stream, ds in sorted(deliveries.items()) for d in ds if d.topic not in self._topics}
        if new_topics:
            self._p.ensure_topics(dict(sorted(new_topics.items())))
            self._topics.update(new_topics)
        self.by_stream = deliveries
        return expiries

    def _audit_decisions(self, decisions: list[Decision], state: PolicyState, now: dt.datetime) -> None:
        """Audit each decision that differs from the last one audited for its subscription, before any record is
        delivered under it; a periodic re-plan that changes nothing adds nothing to the trail."""
        decided: dict[tuple[str, ...], dict[str, Any]] = {}
        for decision in decisions:
            plan = decision.plan
            subscription = (plan.subscriber, plan.role, plan.stream, plan.purpose)
            terms = decided[subscription] = decision_terms(plan, state.catalog_revision)
            if self._decided.get(subscription) != terms:
                self._p.audit(POLICY_DECISION, decision_record(plan, decision.decision_id,
                                                               state.catalog_revision, self._worker, rfc3339(now)))
                self._decided[subscription] = terms
        self._decided = decided

    def _delivery(self, stream: str, plan: Plan, suppression: SuppressionRule | None, version: int) -> Delivery:
        key = (plan.subscriber, plan.role, stream, plan.scopes, plan.agreements, suppression, version)
        built = self._built.get(key)
        if built is None:
            schema = with_suppressed_counts(projected_schema(self._p.schemas[stream], plan), suppression)
            self._p.registry.set_compatibility(value_subject(plan.topic), "NONE")
            master = self._p.pseudonym_secret if version == FIRST_VERSION else self._p.pseudonym_masters(version)
            pseudonymise = Pseudonymiser(subscriber_key(master, plan.subscriber, version), stream)
            project = Projector(plan, self._p.schemas[stream], pseudonymise=pseudonymise,
                                today=lambda: self._clock().date())
            form = None if suppression is not None else encoding_form(schema)
            built = self._built[key] = (project, AvroSerializer(self._p.registry, json.dumps(schema)), form)
        return Delivery(plan, plan.topic, plan.areas, built[0], built[1], SerializationContext(plan.topic),
                        plan.revision.encode(), suppression, key_label(version), built[2])


def encoding_form(schema: dict[str, Any]) -> str:
    """A projected schema as its records are encoded: the delivery namespace and doc (the subscriber's) left out.
    Named types inside are defined by their short names (domain/avro_copy.py), so equal forms encode equal records
    to equal bytes; forms that differ in anything else (a field's doc) only miss a chance to share."""
    return json.dumps({key: value for key, value in schema.items() if key not in ("namespace", "doc")},
                      sort_keys=True)


def suppression_of(state: PolicyState, agreements: tuple[str, ...]) -> SuppressionRule | None:
    """The suppression the plan's agreements and grants ask for: one that grants the cells unsuppressed (the DPH's
    restricted channel) makes suppression moot, so a rule applies only when every one of them has one (the first
    agreement's, sorted, when they differ)."""
    known = {**((state.catalog or {}).get("agreements") or {}), **state.grants}
    rules = [(known.get(ident) or {}).get("suppression") for ident in sorted(agreements)]
    first = rules[0] if rules else None
    if first is None or any(rule is None for rule in rules):
        return None
    return SuppressionRule.from_json(first)


def with_suppressed_counts(schema: dict[str, Any], rule: SuppressionRule | None) -> dict[str, Any]:
    """The projected schema with each suppressed count optional: null is a hidden count."""
    if rule is None:
        return schema
    fields = []
    for field in schema["fields"]:
        if field["name"] in rule.counts and not (isinstance(field["type"], list) and "null" in field["type"]):
            branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
            field = {**field, "type": ["null", *branches], "default": None,
                     "doc": f"{field.get('doc') or field['name']} Null where suppressed: under {rule.threshold}, "
                            f"or hidden so that a row or column total cannot give a small count away; others "
                            f"rounded to the nearest {rule.round_to}."}
        fields.append(field)
    return {**schema, "fields": fields}


def _one_per_topic(plans: list[Plan]) -> list[Plan]:
    """One plan per delivery topic. The catalog refuses two purposes for one role, but grants could bring one; a
    subscriber must never get a record twice in two shapes, so the first purpose (sorted) is kept, loudly."""
    chosen: dict[str, Plan] = {}
    for plan in sorted(plans, key=lambda p: (p.topic, p.purpose)):
        kept = chosen.setdefault(plan.topic, plan)
        if kept is not plan:
            log.error("%s: plans for purposes %r and %r; delivering under %r only", plan.topic, kept.purpose,
                      plan.purpose, kept.purpose)
    return list(chosen.values())
