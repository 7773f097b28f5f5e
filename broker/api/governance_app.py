"""The governance HTTP API: raise, decide and appeal disputes, make and review access requests (api/access_routes.py),
declare emergencies, break glass, report misrouted rows and confirm their deletion, register webhooks; apply the
catalog and revoke agreements (api/control_routes.py).

Every call but `GET /health` carries a bearer token naming a body, one of its roles and a person (broker/api/auth.py)
and is authorised by OPA (`data.accord.authz`), which is told the parties, the current tier's deciders and every
tier's deciders of the dispute acted on; the governance rules in the domain check every command again as a second
line. A dispute is read in full only by its parties, its deciders and auditors (broker/domain/disclosure.py); any
other member listing disputes gets each one's outcome summary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.adapters.metrics import PROMETHEUS_TEXT
from broker.adapters.webhooks import WebhookDelivery
from broker.api.access_routes import add_access_routes, request_resource
from broker.api.auth import Guard, caller, guarded
from broker.api.control_routes import AGREEMENT_ROUTES, add_control_routes, agreement_resource
from broker.domain.adjudication import Decision, DisputeRequest
from broker.domain.disclosure import outcome_summary
from broker.domain.disputes import Dispute
from broker.domain.grant_fields import FieldGrant
from broker.domain.ladder import Actor
from broker.domain.misroute_rules import MisrouteReport
from broker.domain.receipts import ReceiptError
from broker.domain.webhooks import SIGNATURE_HEADER, TOLERANCE_S
from broker.errors import (
    AccordError,
    ConfigError,
    GovernanceError,
    InvalidRequestError,
    NotAuthorisedError,
    NotFoundError,
    ServiceError,
)
from broker.security.api_tokens import SERVICE_BODY, SERVICE_ROLE
from broker.services.governance import Governance
from broker.services.policy_changes import ControlChanges

# NotAuthorisedError and InvalidRequestError are GovernanceErrors too; the first match in this order wins.
STATUS: dict[type[AccordError], int] = {
    ReceiptError: 400, NotAuthorisedError: 403, InvalidRequestError: 400, GovernanceError: 409, NotFoundError: 404,
    ConfigError: 503, ServiceError: 503}


# -- request bodies -----------------------------------------------------------------------------------------------

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DisputeIn(_Body):
    kind: str
    stream: str
    role: str
    purpose: str
    justification: str
    subscriber: str | None = None
    fields: list[str] = Field(default_factory=list)
    areas: list[str] | None = None
    until: AwareDatetime | None = None
    decision_id: str | None = None
    policy_revision: str | None = None
    urgency: str = "routine"
    evidence: list[str] = Field(default_factory=list)
    backfill: str | None = None
    time_scale: float = Field(default=1.0, ge=1, allow_inf_nan=False, description=(
        "drills only: the ladder's deadlines divided by this for this dispute (both bodies must be drill bodies)"))

    def request(self) -> DisputeRequest:
        return DisputeRequest(
            kind=self.kind, stream=self.stream, role=self.role, purpose=self.purpose,
            justification=self.justification, subscriber=self.subscriber, fields=tuple(self.fields),
            areas=None if self.areas is None else tuple(self.areas), until=self.until, decision_id=self.decision_id,
            policy_revision=self.policy_revision, urgency=self.urgency, evidence=tuple(self.evidence),
            backfill=self.backfill, time_scale=self.time_scale)


class FieldGrantIn(_Body):
    transform: Literal["keep", "mask", "pseudonymise", "generalise"] = "keep"
    method: Literal["age-band", "postcode-district", "lsoa"] | None = None
    keep_last: int | None = Field(default=None, ge=0, description="mask: how many last characters stay visible")
    at: str | None = Field(default=None, description="age-band: the date field the age is taken at")


class DecisionIn(_Body):
    outcome: str
    reason: str
    fields: list[str] | None = None
    areas: list[str] | None = None
    until: AwareDatetime | None = None
    transforms: dict[str, FieldGrantIn] | None = Field(
        default=None, description="granted fields delivered other than as they are, e.g. "
        '{"dob": {"transform": "generalise", "method": "age-band"}}; the rest are kept')

    def decision(self) -> Decision:
        transforms = None if self.transforms is None else {
            name: FieldGrant(t.transform, t.method, t.keep_last, t.at) for name, t in self.transforms.items()}
        return Decision(outcome=self.outcome, reason=self.reason,
                        fields=None if self.fields is None else tuple(self.fields),
                        areas=None if self.areas is None else tuple(self.areas), until=self.until,
                        transforms=transforms)


class CommentIn(_Body):
    text: str


class AppealIn(_Body):
    reason: str


class DeclarationIn(_Body):
    scope: str = "national"
    level: str
    reason: str


class LiftIn(_Body):
    scope: str = "national"
    reason: str


class BreakGlassIn(_Body):
    stream: str
    purpose: str
    justification: str


class SourceIn(_Body):
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class MisrouteIn(_Body):
    stream: str
    recipient: str = Field(description="the body that received the row")
    belongs_to: str = Field(description="the LA code of the area the row belongs to (its resident's)")
    source: SourceIn = Field(description="the row's place on the ingest topic: its accord.source header")
    reason: str

    def report(self) -> MisrouteReport:
        return MisrouteReport(stream=self.stream, recipient=self.recipient, belongs_to=self.belongs_to,
                              source=self.source.model_dump(), reason=self.reason)


class DeletionIn(_Body):
    statement: str = Field(description="what was deleted, from where, and by whom")


class ReceiptKeyIn(_Body):
    public_key: str = Field(max_length=2000, description="an Ed25519 public key, PEM or the base64 of its raw 32 "
                                                         "bytes")


class ReviewIn(_Body):
    note: str = Field(description="what the review found and decided (renew, amend, end the agreement)")


class WebhookIn(_Body):
    url: str | None = Field(description="where to POST this body's notifications; null removes the webhook")


# -- who is acting ------------------------------------------------------------------------------------------------

def acting(request: Request) -> Actor:
    """The body, role and person the caller's verified token names."""
    return caller(request).actor


Acting = Annotated[Actor, Depends(acting)]


def resource_of(governance: Governance, route: str, params: Mapping[str, str]) -> dict[str, Any] | None:
    """What OPA needs about the dispute or misroute a route acts on: parties, tier and that tier's deciders."""
    ident = params.get("ident")
    if ident is None:
        return None
    if route in AGREEMENT_ROUTES:
        return agreement_resource(governance.context().catalog, ident)
    if route.startswith("/requests/"):
        return request_resource(governance, ident)
    if route.startswith("/receipt-keys/"):
        known = next((k for k in governance.receipt_keys() if k.key_id == ident), None)
        return {"receipt_key": {"id": ident, "body": None if known is None else known.body}}
    if route.startswith("/misroutes/"):
        try:
            found = governance.misroute(ident)
        except GovernanceError as exc:
            raise NotFoundError(str(exc)) from None
        return {"misroute": {"id": found.id, "publisher": found.publisher, "recipient": found.recipient}}
    dispute = _existing(governance, ident)
    tiers = governance.context().ladder.tiers
    tier = tiers[dispute.tier] if 0 <= dispute.tier < len(tiers) else None
    deciders = {"bodies": [], "roles": [], "party": None} if tier is None else {
        "bodies": sorted(tier.decider_bodies(dispute.publisher)), "roles": sorted(tier.roles), "party": tier.party}
    every_tier = [{"bodies": sorted(t.decider_bodies(dispute.publisher)), "roles": sorted(t.roles)} for t in tiers]
    return {"dispute": {"id": dispute.id, "state": dispute.state, "publisher": dispute.publisher,
                        "subscriber": dispute.subscriber, "challenger": dispute.challenger.body,
                        "parties": sorted(dispute.parties), "tier": dispute.tier, "deciders": deciders,
                        "ladder_deciders": every_tier}}


def _listed(governance: Governance, reader: Actor, dispute: Dispute) -> dict[str, Any]:
    """A dispute as a list shows it to `reader`: without its timeline, or only its outcome if not theirs to read."""
    if not _reads_in_full(governance, reader, dispute):
        return outcome_summary(dispute)
    return {key: value for key, value in dispute.to_json().items() if key != "timeline"}


def _reads_in_full(governance: Governance, reader: Actor, dispute: Dispute) -> bool:
    if (reader.body, reader.role) == (SERVICE_BODY, SERVICE_ROLE):
        return True         # Accord's own services (the demo's reader, exports) read everything, as in OPA
    return governance.reads_in_full(reader, dispute)


def _existing(governance: Governance, ident: str) -> Dispute:
    """The dispute, or NotFoundError (404): the service reports an unknown id as a bad move."""
    try:
        return governance.dispute(ident)
    except GovernanceError as exc:
        raise NotFoundError(str(exc)) from None


# -- the app ------------------------------------------------------------------------------------------------------

def create_governance_app(governance: Governance, deliveries: Callable[[], Sequence[WebhookDelivery]],
                          metrics: Callable[[], bytes] | None = None, *, guard: Guard,
                          changes: ControlChanges | None = None) -> FastAPI:
    """The app; `guard` checks callers (token and OPA); with `changes`, the control-change routes too."""
    app = FastAPI(title="Accord governance", version="1",
                  description="Disputes over data sharing, decided up an escalation ladder with deadlines; "
                              "emergency declarations; break-glass; webhooks. Every call but /health needs "
                              "`Authorization: Bearer <token>` naming the acting body, role and person.",
                  **guarded(guard, "governance", lambda route, params: resource_of(governance, route, params)))
    _error_handlers(app)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    if metrics is not None:
        scrape = metrics

        @app.get("/metrics", response_class=Response)
        def prometheus() -> Response:
            return Response(scrape(), media_type=PROMETHEUS_TEXT)

    _dispute_routes(app, governance)
    _decision_routes(app, governance)
    _emergency_routes(app, governance)
    _misroute_routes(app, governance)
    add_access_routes(app, governance, guard)
    _webhook_routes(app, governance, deliveries)
    _receipt_key_routes(app, governance)
    _drill_routes(app, governance)
    if changes is not None:
        add_control_routes(app, changes)
    return app


def _error_handlers(app: FastAPI) -> None:
    async def accord_error(_: Request, exc: Exception) -> JSONResponse:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)
        return JSONResponse({"error": str(exc)}, status_code=status)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"error": _problems(exc)}, status_code=422)

    for kind in STATUS:
        app.add_exception_handler(kind, accord_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)


def _problems(exc: RequestValidationError) -> str:
    """Pydantic's errors as one line: `body.until: Input should have timezone info; query.state: ...`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors())


def _dispute_routes(app: FastAPI, governance: Governance) -> None:
    @app.post("/disputes", status_code=201)
    def raise_dispute(body: DisputeIn, actor: Acting) -> dict[str, Any]:
        """Challenge a refusal or restriction (or, as the publisher, a grant); the first tier's deadline starts."""
        return governance.raise_dispute(actor, body.request()).to_json()

    @app.get("/disputes")
    def disputes(actor: Acting, state: str | None = None, body: str | None = None, stream: str | None = None,
                 deadline_before: AwareDatetime | None = None) -> dict[str, Any]:
        """Disputes, oldest first, without their timelines; `body` matches any party. Those the caller is neither a
        party to, a decider of nor an auditor of show only id, stream, state and outcome (`"summary": true`)."""
        found = governance.disputes(state=state, body=body, stream=stream, deadline_before=deadline_before)
        return {"disputes": [_listed(governance, actor, d) for d in found]}

    @app.get("/disputes/{ident}")
    def dispute(ident: str, actor: Acting) -> dict[str, Any]:
        """One dispute with its full timeline: for its parties, its deciders and auditors only (403 otherwise)."""
        found = _existing(governance, ident)
        if not _reads_in_full(governance, actor, found):
            raise NotAuthorisedError(f"dispute {ident} is read in full only by its parties, its deciders and "
                                     "auditors; GET /disputes shows its outcome")
        return found.to_json()

    @app.post("/disputes/{ident}/comments")
    def comment(ident: str, body: CommentIn, actor: Acting) -> dict[str, Any]:
        _existing(governance, ident)
        return governance.comment(ident, actor, body.text).to_json()

    @app.post("/disputes/{ident}/appeal")
    def appeal(ident: str, body: AppealIn, actor: Acting) -> dict[str, Any]:
        """A party appeals an enforced decision to the next tier, within the appeal window."""
        _existing(governance, ident)
        return governance.appeal(ident, actor, body.reason).to_json()

    @app.post("/break-glass", status_code=201)
    def break_glass(body: BreakGlassIn, actor: Acting) -> dict[str, Any]:
        """Take a template's access now in a declared emergency; returns the review dispute this opens."""
        return governance.break_glass(actor, body.stream, body.purpose, body.justification).to_json()


def _decision_routes(app: FastAPI, governance: Governance) -> None:
    def approve(ident: str, body: DecisionIn, actor: Actor) -> dict[str, Any]:
        _existing(governance, ident)
        dispute = governance.decide(ident, actor, body.decision())
        return {"decided": dispute.state != "awaiting", "dispute": dispute.to_json()}

    @app.post("/disputes/{ident}/decision")
    def decide(ident: str, body: DecisionIn, actor: Acting) -> dict[str, Any]:
        """One decider's approval; the dispute is decided once the tier's N approvals agree (`decided`)."""
        return approve(ident, body, actor)

    @app.post("/disputes/{ident}/approvals")
    def approval(ident: str, body: DecisionIn, actor: Acting) -> dict[str, Any]:
        """The same as /decision, named for a tier that needs several approvals."""
        return approve(ident, body, actor)


def _emergency_routes(app: FastAPI, governance: Governance) -> None:
    @app.get("/emergency")
    def levels() -> dict[str, Any]:
        """Declarations in force by scope (`national`, an E12 region, or a drill body's own region while a drill's
        break-glass check runs); a scope not listed is at normal."""
        return {"levels": governance.emergency()}

    @app.post("/emergency")
    def declare(body: DeclarationIn, actor: Acting) -> dict[str, Any]:
        """Declare a level (a declarer's role); open deadlines shorten to the level's; `normal` lifts."""
        return governance.declare(actor, body.scope, body.level, body.reason)

    @app.post("/emergency/lift")
    def lift(body: LiftIn, actor: Acting) -> dict[str, Any]:
        return governance.declare(actor, body.scope, "normal", body.reason)


def _misroute_routes(app: FastAPI, governance: Governance) -> None:
    def existing(ident: str) -> dict[str, Any]:
        try:
            return governance.misroute(ident).to_json()
        except GovernanceError as exc:
            raise NotFoundError(str(exc)) from None

    @app.post("/misroutes", status_code=201)
    def report(body: MisrouteIn, actor: Acting) -> dict[str, Any]:
        """The publisher or the recipient reports a row delivered to a council it does not belong to; the
        recipient must delete it and confirm within the ladder's deletion deadline. Both councils are told."""
        return governance.report_misroute(actor, body.report()).to_json()

    @app.get("/reviews")
    def reviews(body: str | None = None, state: str | None = None) -> dict[str, Any]:
        """Agreements' review tasks, raised when an agreement's review date comes (`state`: open or completed;
        `body`: tasks where it is the subscriber or the publisher)."""
        return {"reviews": governance.reviews(body, state)}

    @app.post("/reviews/{task}/completion")
    def complete_review(task: str, body: ReviewIn, actor: Acting) -> dict[str, Any]:
        """A party's IG lead, the governance board or the arbiter records the review as done, saying what it found."""
        return governance.complete_review(task, actor, body.note)

    @app.get("/misroutes")
    def misroutes(body: str | None = None) -> dict[str, Any]:
        """Misrouting reports, oldest first; `body` matches the publisher, the recipient or a rightful council."""
        return {"misroutes": [m.to_json() for m in governance.misroutes(body)]}

    @app.get("/misroutes/{ident}")
    def misroute(ident: str) -> dict[str, Any]:
        return existing(ident)

    @app.post("/misroutes/{ident}/deletion")
    def confirm(ident: str, body: DeletionIn, actor: Acting) -> dict[str, Any]:
        """The recipient confirms it deleted the row; the confirmation is logged on the governance topic."""
        existing(ident)
        return governance.confirm_deletion(ident, actor, body.statement).to_json()


def _webhook_routes(app: FastAPI, governance: Governance,
                    deliveries: Callable[[], Sequence[WebhookDelivery]]) -> None:
    @app.put("/webhooks")
    def register(body: WebhookIn, actor: Acting) -> dict[str, Any]:
        """Set (or, with null, remove) the acting body's webhook. The answer holds the secret its notifications are
        signed with, shown this once (registering again makes a new one); the URL must reach a public address."""
        secret = governance.register_webhook(actor, body.url)
        return {"body": actor.body, "url": body.url, "secret": secret,
                "signature": {"header": SIGNATURE_HEADER, "scheme": "t=<unix seconds>,v1=<hex HMAC-SHA256 of "
                              "'<t>.' + raw body>", "tolerance_s": TOLERANCE_S}}

    @app.get("/webhooks/deliveries")
    def delivered(body: str | None = None) -> dict[str, Any]:
        """Webhook deliveries, oldest first, each as it stands (pending, delivered, failed, gave-up, no-webhook)."""
        return {"deliveries": [dataclasses.asdict(d) for d in deliveries() if body is None or d.body == body]}


class DrillReportIn(_Body):
    run: str = Field(pattern=r"^[A-Za-z0-9._-]{1,80}$")
    deployment: str = Field(max_length=200)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="the digest the report's signature covers")
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$", description="the audit key that signed it")
    verdict: Literal["pass", "fail", "incomplete"]
    counts: dict[Literal["pass", "fail", "not-run"], int]
    finished_at: AwareDatetime


def _drill_routes(app: FastAPI, governance: Governance) -> None:
    @app.post("/drill-reports", status_code=201)
    def record_drill_report(body: DrillReportIn, actor: Acting) -> dict[str, Any]:
        """Record a signed drill report's digest in the governance log and the audit chain (Accord's operator)."""
        return governance.record_drill_report(actor, body.model_dump(mode="json"))


def _receipt_key_routes(app: FastAPI, governance: Governance) -> None:
    @app.post("/receipt-keys", status_code=201)
    def register_receipt_key(body: ReceiptKeyIn, actor: Acting) -> dict[str, Any]:
        """Register an Ed25519 public key the acting body signs its delivery receipts with; its id is the key's
        fingerprint. The private key stays with the body (`accord credentials receipt-key` makes a pair)."""
        return governance.register_receipt_key(actor, body.public_key).to_json()

    @app.post("/receipt-keys/{ident}/retire")
    def retire_receipt_key(ident: str, actor: Acting) -> dict[str, Any]:
        """Retire one of the acting body's receipt keys: receipts signed with it are refused from now on."""
        return governance.retire_receipt_key(actor, ident).to_json()

    @app.get("/receipt-keys")
    def receipt_keys(body: str | None = None) -> dict[str, Any]:
        """Registered receipt keys (public keys, active and retired), with whom they belong to."""
        return {"receipt_keys": [k.to_json() for k in governance.receipt_keys(body)]}


__all__ = ["create_governance_app"]
