"""The governance service: disputes and declarations as commands over the governance topic, enforced on the
control topic. State is rebuilt from the topic at start; `tick()` fires deadlines and finishes any enforcement a
crash interrupted. One writer at a time (the governance log's transactional id fences a second).

Webhook notifications go through an outbox on the same topic: each command's events and the notifications they
cause are appended in one transaction, a delivery's end is appended when the notifier reports it, and `start()`
hands the notifier whatever is still owed. Delivery is at least once; `delivery_id` lets a receiver drop repeats."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from broker.clock import Clock
from broker.domain import (
    access_rules,
    adjudication,
    agreement_notices,
    disclosure,
    escalation,
    misroute_rules,
    notifications,
    webhooks,
)
from broker.domain.access_requests import AccessRequest
from broker.domain.access_rules import RequestForm
from broker.domain.adjudication import Context, Decision, DisputeRequest
from broker.domain.control import PolicyState
from broker.domain.disputes import Dispute
from broker.domain.drills import DRILL_REPORTED
from broker.domain.escalation import BREAK_GLASS_EXPIRED
from broker.domain.governance import FINISHED, QUEUED, GovernanceEvent, GovernanceState, apply, new_event
from broker.domain.ladder import Actor, Ladder
from broker.domain.misroute_rules import MisrouteReport
from broker.domain.misroutes import Misroute
from broker.domain.receipt_ledger import ReceiptKey
from broker.domain.receipts import KEY_REGISTERED, KEY_RETIRED, fingerprint, parse_public_key, public_key_text
from broker.errors import AccordError, ConfigError, GovernanceError, NotAuthorisedError, NotFoundError
from broker.services.enforcement import Enforcement
from broker.services.policy_changes import ControlAppender

log = logging.getLogger(__name__)


class Notifier(Protocol):
    """Tells a body about a governance event (webhooks); queued, so a slow receiver never holds up a decision."""

    def notify(self, body: str, notification: Mapping[str, Any], delivery_id: str | None = None) -> None:
        """Queue `notification` (JSON-able, with at least "event_id" and "type") for `body`; never blocks or raises.

        `delivery_id` names the delivery (the same on every retry, and when a restart sends it again)."""

    def check_url(self, url: str) -> None:
        """Raise GovernanceError unless notifications may be sent to `url` (a public address, or one allowed)."""

    def signing_secret(self, body: str, registration: str) -> str:
        """The secret `body`'s notifications are signed with under `registration` (shown to the body once)."""


class GovernanceLog(Protocol):
    def append(self, events: Sequence[Mapping[str, Any]]) -> list[int]: ...

    def read_new(self, timeout_s: float = ...) -> list[tuple[int, dict[str, Any]]]: ...


class GovernanceMetrics(Protocol):
    def decided(self, dispute: Dispute) -> None: ...

    def enforced(self, dispute: Dispute, seconds: float) -> None: ...

    def open_by_tier(self, counts: Mapping[str, int]) -> None: ...

    def deadlines_by_tier(self, earliest: Mapping[str, dt.datetime | None]) -> None:
        """The earliest deadline of the disputes awaiting a decision in each tier (None: no deadline pending)."""

    def request_decided(self, request: AccessRequest) -> None: ...

    def first_record(self, request: AccessRequest) -> None: ...


class QuarantineFeed(Protocol):
    """Quarantine entries written since `positions` ("topic/partition" → next offset; absent: from the start), each
    with its `position` ({topic, partition, offset}) added."""

    def read_new(self, positions: Mapping[str, int]) -> list[dict[str, Any]]: ...


class DeliveryReports(Protocol):
    """The gates' delivery-batch audit records ({topic, partition, first_offset, subscriber, role, stream, at})
    written at or after `since`, each once: how the service learns when a request's first record was delivered."""

    def read_new(self, since: dt.datetime) -> list[dict[str, Any]]: ...


class PolicyView(Protocol):
    """The control topic as folded so far (the applied catalog, grants and levels), read to its end on demand."""

    def current(self) -> PolicyState: ...


class Governance:
    def __init__(self, log: GovernanceLog, control: ControlAppender, policy: PolicyView, clock: Clock,
                 notifier: Notifier, metrics: GovernanceMetrics | None = None,
                 quarantine: QuarantineFeed | None = None, deliveries: DeliveryReports | None = None,
                 notice_days: Sequence[int] = agreement_notices.DEFAULT_NOTICE_DAYS) -> None:
        self._log, self._control, self._policy, self._clock = log, control, policy, clock
        self._notice_days = tuple(notice_days)
        self._notifier, self._metrics, self._quarantine = notifier, metrics, quarantine
        self._deliveries = deliveries
        self._enforcement = Enforcement(control, clock)
        self._state = GovernanceState()
        self._lock = threading.RLock()

    # -- state ------------------------------------------------------------------------------------------------

    @property
    def state(self) -> GovernanceState:
        return self._state

    def start(self) -> list[GovernanceEvent]:
        """Rebuild from the topic, put back any policy effect a crash left unwritten, then fire what is due.

        An applied catalog this version cannot read (one compiled before a ladder key existed) does not stop the
        service: commands answer with the ConfigError and every tick retries, so applying the catalog again heals it.
        """
        with self._lock:
            self._catch_up()
            for delivery, entry in self._state.outbox.items():     # owed from before a stop or a crash
                self._notifier.notify(str(entry["body"]), entry["notification"], delivery)
            try:
                self._reconcile()
                return self.tick()
            except ConfigError as exc:
                log.error("governance is waiting for a catalog it can read (apply the catalog again): %s", exc)
                return []

    def _catch_up(self) -> None:
        for offset, event in self._log.read_new():
            self._apply(offset, event)

    def _apply(self, offset: int, event: Mapping[str, Any]) -> None:
        if offset < self._state.offset:
            return      # appended by this service and applied then; now read back from the topic
        self._state = self._applied(self._state, offset, event)

    @staticmethod
    def _applied(state: GovernanceState, offset: int, event: Mapping[str, Any]) -> GovernanceState:
        try:
            return apply(state, offset, event)
        except (GovernanceError, KeyError, TypeError, ValueError) as exc:
            log.error("governance event at offset %d skipped: %s", offset, exc)
            return state

    def context(self) -> Context:
        policy = self._policy.current()
        if policy.catalog is None:
            raise ConfigError("no catalog has been applied; run `accord catalog apply` first")
        return Context(self._state, policy.catalog, Ladder.from_catalog(policy.catalog), self._clock())

    # -- commands ---------------------------------------------------------------------------------------------

    def raise_dispute(self, actor: Actor, request: DisputeRequest) -> Dispute:
        ident = f"d-{uuid.uuid4().hex[:10]}"
        self._run(lambda ctx: adjudication.raise_dispute(ctx, actor, request, ident))
        return self._state.dispute(ident)

    def decide(self, ident: str, actor: Actor, decision: Decision) -> Dispute:
        self._run(lambda ctx: adjudication.decide(ctx, ident, actor, decision))
        return self._state.dispute(ident)

    def appeal(self, ident: str, actor: Actor, reason: str) -> Dispute:
        self._run(lambda ctx: escalation.appeal(ctx, ident, actor, reason))
        return self._state.dispute(ident)

    def comment(self, ident: str, actor: Actor, text: str) -> Dispute:
        self._run(lambda ctx: escalation.comment(ctx, ident, actor, text))
        return self._state.dispute(ident)

    def declare(self, actor: Actor, scope: str, level: str, reason: str) -> dict[str, Any]:
        self._run(lambda ctx: escalation.declare(ctx, actor, scope, level, reason)
                  + access_rules.shortened(ctx, scope, level))
        return {"scope": scope, "level": self._state.level(scope)}

    def break_glass(self, actor: Actor, stream: str, purpose: str, justification: str) -> Dispute:
        ident = f"d-{uuid.uuid4().hex[:10]}"
        self._run(lambda ctx: escalation.break_glass(ctx, actor, stream, purpose, justification, ident))
        return self._state.dispute(ident)

    def make_request(self, actor: Actor, form: RequestForm) -> AccessRequest:
        ident = f"r-{uuid.uuid4().hex[:10]}"
        self._run(lambda ctx: access_rules.make(ctx, actor, form, ident))
        return self._state.request(ident)

    def review_request(self, ident: str, actor: Actor, verdict: str, reason: str) -> AccessRequest:
        """`verdict` approve or refuse; the request is decided (and an approval put in force) at the quorum."""
        self._run(lambda ctx: access_rules.review(ctx, ident, actor, verdict, reason))
        return self._state.request(ident)

    def report_misroute(self, actor: Actor, request: MisrouteReport) -> Misroute:
        ident = f"m-{uuid.uuid4().hex[:10]}"
        self._run(lambda ctx: misroute_rules.report(ctx, actor, ident, request))
        return self._state.misroute(ident)

    def confirm_deletion(self, ident: str, actor: Actor, statement: str) -> Misroute:
        self._run(lambda ctx: misroute_rules.confirm_deletion(ctx, ident, actor, statement))
        return self._state.misroute(ident)

    def complete_review(self, task: str, actor: Actor, note: str) -> dict[str, Any]:
        self._run(lambda ctx: agreement_notices.complete_review(ctx, task, actor, note))
        return dict(self._state.reviews[task])

    def register_webhook(self, actor: Actor, url: str | None) -> str | None:
        """Set (None: remove) the acting body's webhook; the secret its notifications are now signed with."""
        def events(ctx: Context) -> list[GovernanceEvent]:
            ctx.check_actor(actor)
            if url is not None:
                webhooks.check_url(url)
                self._notifier.check_url(url)
            return [new_event("webhook-registered", None, ctx.now, actor, {"body": actor.body, "url": url})]
        self._run(events)
        registration = self._state.registrations.get(actor.body)
        return None if registration is None else self._notifier.signing_secret(actor.body, registration)

    def register_receipt_key(self, actor: Actor, public_key: str) -> ReceiptKey:
        """Register an Ed25519 public key the acting body signs its delivery receipts with (its private key stays
        with the body). Registering the same key again changes nothing; a key another body registered, or one
        retired (perhaps because it leaked), is refused."""
        key = parse_public_key(public_key)
        ident = fingerprint(key)

        def events(ctx: Context) -> list[GovernanceEvent]:
            ctx.check_actor(actor)
            known = self._state.receipt_keys.get(ident)
            if known is not None and known.body != actor.body:
                raise GovernanceError(f"receipt key {ident} is registered to another body; make a key of your own "
                                      "(`accord credentials receipt-key`)")
            if known is not None and not known.active:
                raise GovernanceError(f"receipt key {ident} was retired at {known.retired_at} and stays retired; "
                                      "make a new pair with `accord credentials receipt-key`")
            if known is not None:
                return []
            data = {"body": actor.body, "key_id": ident, "public_key": public_key_text(key)}
            return [new_event(KEY_REGISTERED, None, ctx.now, actor, data)]
        self._run(events)
        return self._state.receipt_keys[ident]

    def retire_receipt_key(self, actor: Actor, ident: str) -> ReceiptKey:
        """Retire one of the acting body's receipt keys: receipts signed with it are refused from now on (those
        already accepted stay on the audit trail, verifiable with the key it keeps)."""
        def events(ctx: Context) -> list[GovernanceEvent]:
            ctx.check_actor(actor)
            known = self._state.receipt_keys.get(ident)
            if known is None or known.body != actor.body:
                raise NotFoundError(f"{actor.body} has no receipt key {ident!r}; GET /receipt-keys lists them")
            if not known.active:
                return []
            return [new_event(KEY_RETIRED, None, ctx.now, actor, {"body": actor.body, "key_id": ident})]
        self._run(events)
        return self._state.receipt_keys[ident]

    def record_drill_report(self, actor: Actor, record: Mapping[str, Any]) -> dict[str, Any]:
        """Put a signed drill report's digest (run, digest, key_id, verdict, counts) on the governance log, and so
        in the audit chain: a report shown later can be matched to the one the drill signed then."""
        def events(ctx: Context) -> list[GovernanceEvent]:
            return [new_event(DRILL_REPORTED, None, ctx.now, actor, dict(record))]
        written = self._run(events)
        return dict(written[0])

    def receipt_keys(self, body: str | None = None) -> list[ReceiptKey]:
        with self._lock:
            self._catch_up()
            found = [k for k in self._state.receipt_keys.values() if body is None or k.body == body]
            return sorted(found, key=lambda k: (k.body, k.registered_at, k.key_id))

    def webhook_finished(self, delivery_id: str, outcome: str, attempts: int, status_code: int | None,
                         error: str | None) -> None:
        """The notifier ended a delivery (delivered, failed, gave up, no webhook): out of the outbox for good.

        If this cannot be written, the delivery stays owed and is sent again after a restart (at least once)."""
        with self._lock:
            if delivery_id not in self._state.outbox:
                return
            data = {"delivery": delivery_id, "outcome": outcome, "attempts": attempts, "status_code": status_code,
                    "error": error}
            try:
                self._append([new_event(FINISHED, None, self._clock(), None, data)])
            except AccordError as exc:
                log.error("could not record the end of webhook delivery %s (sent again after a restart): %s",
                          delivery_id, exc)

    def tick(self) -> list[GovernanceEvent]:
        """Enforce decisions not yet in force, then append (and enforce) what the clock has made due."""
        with self._lock:
            self._catch_up()
            if self._policy.current().catalog is None:
                return []
            written = self._finish_enforcement()
            for _ in range(100):    # a passed deadline can make the next one due too
                events = escalation.due(self.context())
                if not events:
                    break
                written.extend(self._commit(events))
            written.extend(self._commit(escalation.expired(self.context())))
            for _ in range(100):
                events = access_rules.due(self.context())
                if not events:
                    break
                written.extend(self._commit(events))
            written.extend(self._commit(self._first_deliveries()))
            written.extend(self._commit(misroute_rules.overdue(self.context())))
            written.extend(self._commit(agreement_notices.due_notices(self.context(), self._notice_days)))
            written.extend(self._commit(agreement_notices.due_reviews(self.context())))
            if self._quarantine is not None:
                entries = self._quarantine.read_new(self._state.quarantine_read)
                written.extend(self._commit(misroute_rules.jurisdiction_queries(self.context(), entries)))
            return written

    def _first_deliveries(self) -> list[GovernanceEvent]:
        since = access_rules.awaiting_first_delivery(self._state.requests)
        if self._deliveries is None or since is None:
            return []
        return access_rules.first_deliveries(self.context(), self._deliveries.read_new(since))

    def _run(self, command: Callable[[Context], list[GovernanceEvent]]) -> list[GovernanceEvent]:
        with self._lock:
            self._catch_up()
            return self._commit(command(self.context()))

    def _commit(self, events: list[GovernanceEvent]) -> list[GovernanceEvent]:
        written = list(events)
        self._commit_quietly(events)
        for event in events:
            written.extend(self._enforce(event))
        self._observe(events)
        return written

    def _commit_quietly(self, events: list[GovernanceEvent]) -> None:
        """Append `events` with the notifications they cause, in one transaction; then hand those to the notifier."""
        if not events:
            return
        queued = self._queued(events)
        self._append(events + queued)
        for entry in queued:
            data = entry["data"]
            self._notifier.notify(data["body"], data["notification"], data["delivery"])

    def _append(self, events: list[GovernanceEvent]) -> None:
        for offset, event in zip(self._log.append(events), events, strict=True):
            self._apply(offset, event)

    def _queued(self, events: Sequence[Mapping[str, Any]]) -> list[GovernanceEvent]:
        """The outbox entries for `events`: each event's recipients as of the state just after it."""
        state, queued, now = self._state, [], self._clock()
        for event in events:
            state = self._applied(state, state.offset, event)
            for body in sorted(notifications.recipients(state, event, self._policy.current().catalog)):
                data = {"delivery": uuid.uuid4().hex, "body": body,
                        "notification": notifications.notification(state, event)}
                queued.append(new_event(QUEUED, None, now, None, data))
        return queued

    # -- enforcement ------------------------------------------------------------------------------------------

    def _enforce(self, event: Mapping[str, Any]) -> list[GovernanceEvent]:
        kind, data = event["type"], event.get("data") or {}
        if kind in ("emergency-declared", "emergency-lifted"):
            self._enforcement.level(self._state, str(data["scope"]))
        elif kind in ("break-glass", BREAK_GLASS_EXPIRED, "request-expired"):
            self._enforcement.effects(data)
        elif kind in ("request-approved", "request-defaulted") and data.get("grant") is not None:
            return self._enforce_request(self._state.request(str(data["request"])))
        elif kind in ("decided", "defaulted"):
            dispute = self._state.disputes[str(event["dispute"])]
            started = time.monotonic()
            control = self._enforcement.effects(data)
            events = escalation.enforced(self.context(), dispute, control)
            self._commit_quietly(events)
            if self._metrics is not None:
                self._metrics.enforced(dispute, time.monotonic() - started)
            return events
        return []

    def _enforce_request(self, request: AccessRequest) -> list[GovernanceEvent]:
        """The approved request's grant written (signed) to the control topic; `request-enforced` names where."""
        control = self._enforcement.effects(request.decision or {})
        events = access_rules.enforced(self.context(), request, control)
        self._commit_quietly(events)
        return events

    def _finish_enforcement(self) -> list[GovernanceEvent]:
        """Enforce the decisions and defaults whose enforcement a crash or a control-topic outage interrupted."""
        written: list[GovernanceEvent] = []
        for request in list(self._state.requests.values()):
            if request.state in ("approved", "defaulted") and (request.decision or {}).get("grant") is not None:
                written.extend(self._enforce_request(request))
        for dispute in list(self._state.disputes.values()):
            if dispute.state in ("decided", "defaulted") and dispute.decision is not None:
                control = self._enforcement.effects(dispute.decision)
                events = escalation.enforced(self.context(), dispute, control)
                self._commit_quietly(events)
                written.extend(events)
        return written

    def _reconcile(self) -> None:
        """Write any grant, revocation or level the governance topic has and the control topic lacks."""
        if self._policy.current().catalog is not None:
            self._finish_enforcement()      # first, so the checks below see its writes and do not repeat them
        self._enforcement.reconcile(self._state, self._policy.current())

    # -- notifications and metrics ----------------------------------------------------------------------------

    def _observe(self, events: Sequence[Mapping[str, Any]]) -> None:
        if self._metrics is None:
            return
        for event in events:
            if event["type"] in ("decided", "defaulted"):
                self._metrics.decided(self._state.disputes[str(event["dispute"])])
            elif event["type"] in ("request-approved", "request-refused", "request-defaulted"):
                self._metrics.request_decided(self._state.request(str(event["data"]["request"])))
            elif event["type"] == "request-first-delivery":
                self._metrics.first_record(self._state.request(str(event["data"]["request"])))
        if self._policy.current().catalog is None:
            return
        tiers = self.context().ladder.tiers
        counts = {tier.name: 0 for tier in tiers}
        earliest: dict[str, dt.datetime | None] = {tier.name: None for tier in tiers}
        for dispute in self._state.disputes.values():
            if dispute.state == "awaiting":
                name = tiers[dispute.tier].name
                counts[name] += 1
                if dispute.deadline is not None:
                    first = earliest[name]
                    earliest[name] = dispute.deadline if first is None else min(first, dispute.deadline)
        self._metrics.open_by_tier(counts)
        self._metrics.deadlines_by_tier(earliest)

    # -- queries ----------------------------------------------------------------------------------------------

    def disputes(self, state: str | None = None, body: str | None = None, stream: str | None = None,
                 deadline_before: dt.datetime | None = None) -> list[Dispute]:
        with self._lock:
            self._catch_up()
            found = []
            for dispute in self._state.disputes.values():
                if state is not None and dispute.state != state:
                    continue
                if body is not None and body not in dispute.parties:
                    continue
                if stream is not None and dispute.stream != stream:
                    continue
                if deadline_before is not None and (dispute.deadline is None or dispute.deadline >= deadline_before):
                    continue
                found.append(dispute)
            return sorted(found, key=lambda d: (d.raised_at, d.id))

    def dispute(self, ident: str) -> Dispute:
        with self._lock:
            self._catch_up()
            return self._state.dispute(ident)

    def reads_in_full(self, reader: Actor, dispute: Dispute) -> bool:
        """Whether `reader` may see `dispute` in full (parties, deciders, auditors); others get its outcome only."""
        ctx = self.context()
        if reader.role == disclosure.AUDITOR_ROLE:
            ctx.check_actor(reader)         # an auditor's role must be one the catalog gives its body
        return disclosure.reads_in_full(ctx.ladder, dispute, reader)

    def requests(self) -> list[AccessRequest]:
        """Every access request, oldest first (the API shows each caller only those OPA lets it see)."""
        with self._lock:
            self._catch_up()
            return sorted(self._state.requests.values(), key=lambda r: (r.made_at, r.id))

    def request(self, ident: str) -> AccessRequest:
        with self._lock:
            self._catch_up()
            return self._state.request(ident)

    def misroutes(self, body: str | None = None) -> list[Misroute]:
        with self._lock:
            self._catch_up()
            found = [m for m in self._state.misroutes.values() if body is None or body in m.parties]
            return sorted(found, key=lambda m: (m.timeline[0]["at"], m.id))

    def misroute(self, ident: str) -> Misroute:
        with self._lock:
            self._catch_up()
            return self._state.misroute(ident)

    def reviews(self, body: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """Agreements' review tasks (raised when a review date comes), of `body` and in `state` if given."""
        with self._lock:
            self._catch_up()
            return agreement_notices.reviews_of(self._state.reviews.values(), body, state)

    def emergency(self) -> dict[str, Any]:
        with self._lock:
            self._catch_up()
            return {scope: dict(value) for scope, value in self._state.emergency.items()}

    def authorise(self, actor: Actor) -> None:
        """Raise NotAuthorisedError unless the catalog gives `actor.body` the role `actor.role`."""
        self.context().check_actor(actor)


__all__ = ["Governance", "GovernanceLog", "NotAuthorisedError"]
