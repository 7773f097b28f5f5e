"""The governance service as a process: Kafka-backed log and control topic, webhooks, a ticker, the HTTP API."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_audit import DEFAULT_CHECKPOINT_EVERY_S, AuditChainer
from broker.adapters.kafka_control import ControlView, ControlWriter, ensure_control_topics
from broker.adapters.kafka_delivery_reports import KafkaDeliveryReports
from broker.adapters.kafka_fences import KafkaFenceAdmin
from broker.adapters.kafka_governance import KafkaGovernanceLog, ensure_governance_topics
from broker.adapters.kafka_quarantine import KafkaQuarantineFeed
from broker.adapters.metrics import PrometheusGovernanceMetrics, chained
from broker.adapters.opa import OpaPolicyEngine
from broker.adapters.webhooks import WebhookDelivery, WebhookNotifier
from broker.clock import Clock, system_clock
from broker.config import Settings
from broker.domain.agreement_notices import DEFAULT_NOTICE_DAYS, parse_notice_days
from broker.domain.audit import Signer, key_id
from broker.domain.topics import AUDIT_TOPIC, GOVERNANCE_TOPIC
from broker.domain.webhooks import Network, Webhook, parse_allow
from broker.errors import AccordError, ConfigError
from broker.security.control_keys import ControlSigner, control_signing_key
from broker.security.kafka_identities import fences_access
from broker.security.opa_tokens import WRITER, opa_engine
from broker.security.secrets import webhook_secret
from broker.services.fences import FenceKeeper
from broker.services.governance import Governance
from broker.services.ingest import load_stream_schemas
from broker.services.policy_changes import ControlChanges

log = logging.getLogger(__name__)


AUDIT_CHAIN_EVERY_S = 1.0
# With the outbox on the governance topic a stop loses nothing, so a receiver gets about three minutes of retries
# (backoff 0.5 s doubling to a minute) before a delivery is given up.
WEBHOOK_ATTEMPTS, WEBHOOK_MAX_BACKOFF_S = 10, 60.0


class GovernanceService:
    """Owns the Kafka clients, the notifier, the ticker thread around one `Governance`, and the audit chainer's
    thread that chains and signs `audit_topic` onto `<audit_topic>.chain` with `audit_key`, at least every
    `audit_checkpoint_every_s` while anything is added, and anchors its checkpoints on the governance topic.
    Webhooks are signed with secrets derived from `webhook_secret` and reach only public addresses and the networks
    in `webhook_allow`.

    It is the one writer of the control topic: every record it writes there is signed with `control_key`, and it
    folds in only records that key signed. `catalog_engine` (OPA, with the writer token; closed on stop) receives
    each catalog an operator applies through `changes`.
    """

    def __init__(self, kafka: KafkaAccess, *, audit_key: Ed25519PrivateKey, webhook_secret: bytes,
                 control_key: Ed25519PrivateKey, catalog_engine: OpaPolicyEngine,
                 webhook_allow: Sequence[Network] = (), clock: Clock = system_clock,
                 tick_s: float = 1.0, transactional_id: str = "accord-governance", webhook_backoff_s: float = 0.5,
                 topic: str = GOVERNANCE_TOPIC, audit_topic: str = AUDIT_TOPIC, schemas_dir: Path,
                 fences: KafkaAccess | None = None, fence_grace: dt.timedelta = dt.timedelta(days=7),
                 audit_checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S,
                 notice_days: Sequence[int] = DEFAULT_NOTICE_DAYS) -> None:
        ensure_control_topics(kafka)
        ensure_governance_topics(kafka, topic, audit_topic)
        self.topic, self.audit_topic = topic, audit_topic
        self._log = KafkaGovernanceLog(kafka, topic, audit_topic, transactional_id=transactional_id)
        self._writer = ControlWriter(kafka, client_id=f"{transactional_id}-control",
                                     signer=ControlSigner(control_key))
        public = control_key.public_key()
        self._view = ControlView(kafka, lambda ident: public if ident == key_id(public) else None,
                                 client_id=f"{transactional_id}-view")
        self._engine = catalog_engine
        self.changes = ControlChanges(self._writer, catalog_engine, self._view)
        self.notifier = WebhookNotifier(self._webhook_of, webhook_secret, allow=webhook_allow,
                                        on_finished=self._delivery_ended, max_attempts=WEBHOOK_ATTEMPTS,
                                        first_backoff_s=webhook_backoff_s,
                                        max_backoff_s=max(webhook_backoff_s, WEBHOOK_MAX_BACKOFF_S))
        shipped = set(load_stream_schemas(schemas_dir))
        # The shipped streams and every stream the applied catalog names (one applied since start included).
        self._quarantine = KafkaQuarantineFeed(
            kafka, lambda: shipped | set((self._view.current().catalog or {}).get("streams") or ()),
            client_id=f"{transactional_id}-quarantine")
        # The gates write their delivery batches to AUDIT_TOPIC whatever this service's own audit topic is.
        self._deliveries = KafkaDeliveryReports(kafka, client_id=f"{transactional_id}-deliveries")
        self.governance = Governance(self._log, self._writer, self._view, clock, self.notifier,
                                     PrometheusGovernanceMetrics(), quarantine=self._quarantine,
                                     deliveries=self._deliveries, notice_days=notice_days)
        self.chainer = AuditChainer(kafka, Signer(audit_key), audit_topic, governance_topic=topic, clock=clock,
                                    checkpoint_every_s=audit_checkpoint_every_s)
        self._tick_s = tick_s
        self._clock = clock
        # Delivery fences run as their own Kafka user (`fences`), whose cluster ALTER the governance user must not
        # hold; off without one (a keeper acts on the shared cluster's delivery topics, by its own clock).
        self._fences: tuple[KafkaFenceAdmin, ControlWriter, FenceKeeper] | None = None
        if fences is not None:
            admin = KafkaFenceAdmin(fences, client_id=f"{transactional_id}-fences")
            audit = ControlWriter(fences, client_id=f"{transactional_id}-fences-audit")
            self._fences = admin, audit, FenceKeeper(admin, lambda kind, record: _ignore(
                audit.append(kind, record, topic=audit_topic)), fence_grace)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.last_tick: float | None = None  # time.monotonic() of the last tick that succeeded (readiness)

    def _webhook_of(self, body: str) -> Webhook | None:
        return self.governance.state.webhook(body)

    def _delivery_ended(self, delivery: WebhookDelivery) -> None:
        self.governance.webhook_finished(delivery.delivery_id, delivery.outcome, delivery.attempts,
                                         delivery.status_code, delivery.error)

    def start(self) -> GovernanceService:
        self.governance.start()
        self.last_tick = time.monotonic()  # caught up: the ticker is judged from here
        self._threads = [threading.Thread(target=self._ticking, name="governance-ticker", daemon=True),
                         threading.Thread(target=self._chaining, name="audit-chainer", daemon=True)]
        if self._fences is not None:
            self._threads.append(threading.Thread(target=self._fencing, name="delivery-fences", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def _ticking(self) -> None:
        while not self._stop.wait(self._tick_s):
            try:
                self.governance.tick()
                self.last_tick = time.monotonic()
            except AccordError as exc:
                log.error("governance tick failed (retried next tick): %s", exc)

    def _fencing(self) -> None:
        assert self._fences is not None
        keeper = self._fences[2]
        while not self._stop.wait(self._tick_s):
            try:
                keeper.step(self._view.current(), self._clock())
            except AccordError as exc:
                log.error("keeping delivery fences failed (retried next tick): %s", exc)

    def _chaining(self) -> None:
        # Its own thread, so a slow chain write never delays a deadline the ticker should fire.
        while not self._stop.wait(AUDIT_CHAIN_EVERY_S):
            self._chain_audit()

    def _chain_audit(self, seal: bool = False) -> None:
        try:
            chained(self.chainer.step(), time.time())
            if seal:
                self.chainer.seal()
        except AccordError as exc:
            log.error("chaining the audit trail failed (retried next time): %s", exc)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        # The notifier first: a delivery ending now appends its end, which the final checkpoint then covers.
        self.notifier.close()
        # Chain what the last commands wrote and sign it, so the trail of a clean stop ends with a checkpoint.
        self._chain_audit(seal=True)
        for closer in (self._log.close, self._writer.close, self._view.close, self._quarantine.close,
                       self._deliveries.close, self.chainer.close, self._engine.close):
            closer()
        if self._fences is not None:
            self._fences[0].close()
            self._fences[1].close()


def serve(settings: Settings, kafka: KafkaAccess, host: str, port: int, audit_key: Ed25519PrivateKey,
          clock: Callable[[], dt.datetime] = system_clock) -> None:
    import uvicorn

    from broker.adapters.metrics import metrics_text
    from broker.api.auth import Guard
    from broker.api.governance_app import create_governance_app
    from broker.api.readiness import add_readiness
    from broker.runtime.probes import dependency_probes
    from broker.services.readiness import progressing

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.opa_url:
        raise ConfigError("the governance service needs ACCORD_OPA_URL: it pushes applied catalogs to OPA")
    service = GovernanceService(kafka, audit_key=audit_key, webhook_secret=webhook_secret(settings.secrets_dir),
                                control_key=control_signing_key(settings.secrets_dir),
                                catalog_engine=opa_engine(settings.opa_url, settings, WRITER),
                                webhook_allow=parse_allow(settings.webhook_allow), clock=clock,
                                tick_s=settings.governance_tick_s,
                                schemas_dir=settings.schemas_dir,
                                fences=fences_access(settings, kafka.bootstrap),
                                fence_grace=dt.timedelta(seconds=settings.fence_grace_s),
                                audit_checkpoint_every_s=settings.audit_checkpoint_every_s,
                                notice_days=_notice_days(settings)).start()
    try:
        app = create_governance_app(service.governance, service.notifier.log, metrics_text,
                                    guard=Guard.from_settings(settings), changes=service.changes)
        add_readiness(app, dependency_probes(settings, kafka) | {"deadline ticker": progressing(
            "deadline ticker", lambda: service.last_tick, within_s=max(10.0, 5 * settings.governance_tick_s))})
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        service.stop()


def _notice_days(settings: Settings) -> tuple[int, ...]:
    try:
        return parse_notice_days(settings.legal_basis_notice_days)
    except ValueError as exc:
        raise ConfigError(f"ACCORD_LEGAL_BASIS_NOTICE_DAYS: {exc}") from None


def _ignore(_: object) -> None:
    return None
