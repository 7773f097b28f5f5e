"""Runs the console process: sessions from sign-in links, OPA for every page, the catalog on disk, the governance
log for the transparency figures, the audit chain for its verification status, and the governance and pull APIs
called as the signed-in person."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from broker.adapters.governance_http import GovernanceClient
from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import end_positions
from broker.adapters.kafka_audit import newest_anchor, read_chain
from broker.adapters.kafka_control import ControlView
from broker.adapters.kafka_deliveries import KafkaDeliveryLog
from broker.adapters.kafka_gate_lag import GateLag
from broker.adapters.kafka_governance import GovernanceFeed
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.metrics import register_gate_lag
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.api.auth import Guard
from broker.api.console.app import Console, create_console_app
from broker.api.console.catalogue import catalogue_view, in_force, with_applied_streams
from broker.api.console.sessions import Sessions, UsedLinks
from broker.catalog import load_catalog
from broker.clock import system_clock
from broker.config import Settings
from broker.domain.audit import from_json_line, key_id, verify
from broker.domain.control import PolicyState
from broker.domain.cursors import CursorCodec
from broker.domain.fences import delivery_access
from broker.domain.topics import GOVERNANCE_TOPIC, ingest_topic, quarantine_topic, value_subject
from broker.domain.transparency import Figures, figures
from broker.errors import AccordError, ConfigError, RegistryError
from broker.local.toolchain import ensure_console_assets
from broker.security.api_tokens import Identity, ServiceTokens, issue, signing_key, verifier_for
from broker.security.audit_keys import load_public_key, public_key_path
from broker.security.control_keys import trusted_keys
from broker.security.secrets import cursor_secret
from broker.services.deliveries import Deliveries
from broker.services.ingest import load_stream_schemas

USED_LINKS_FILE = "console-used-sign-in-links.json"
TOKEN_TTL = dt.timedelta(minutes=5)


class GovernanceFigures:
    """The transparency figures of every event on the governance log so far (read on when asked)."""

    def __init__(self, feed: GovernanceFeed) -> None:
        self._feed, self._events, self._lock = feed, list[dict[str, Any]](), threading.Lock()

    def __call__(self) -> Figures:
        with self._lock:
            self._events.extend(self._feed.read_new())
            return figures(self._events)


@dataclass(frozen=True)
class AuditStatus:
    """The audit chain as `accord audit verify` checks it: entries, checkpoints, the anchor, the first problem."""

    kafka: KafkaAccess
    settings: Settings

    def __call__(self) -> dict[str, Any]:
        checked_at = system_clock().isoformat(timespec="seconds")
        try:
            public = load_public_key(public_key_path(self.settings.secrets_dir))
            entries = [from_json_line(line, n) for n, line in enumerate(read_chain(self.kafka), start=1)
                       if line.strip()]
            anchor = newest_anchor(self.kafka)
        except (AccordError, OSError) as exc:
            return {"ok": False, "checked_at": checked_at, "problem": f"the chain could not be read: {exc}"}
        report = verify(entries, {key_id(public): public}, anchor=anchor)
        problem = report.first_problem
        return {"ok": report.ok, "checked_at": checked_at, "entries": report.entries,
                "checkpoints": report.checkpoints, "unsigned_tail": report.unsigned_tail,
                "anchored": None if anchor is None else anchor.seq,
                "problem": None if problem is None else f"entry {problem.seq} ({problem.kind}): {problem.message}"}


@contextmanager
def open_console(settings: Settings, kafka: KafkaAccess,
                 governance_topic: str = GOVERNANCE_TOPIC) -> Iterator[Console]:
    """The console's parts, closed on exit; the transparency figures are those of `governance_topic`."""
    with ExitStack() as stack:
        catalog = load_catalog(settings.catalog_dir)
        view = catalogue_view(catalog, load_stream_schemas(settings.schemas_dir))
        feed = GovernanceFeed(kafka, governance_topic)
        stack.callback(feed.close)
        deliveries, policy = _deliveries(settings, kafka, stack)
        if not settings.governance_url:
            raise ConfigError("the console needs ACCORD_GOVERNANCE_URL for the disputes pages (or `accord local up`)")
        governance = stack.enter_context(GovernanceClient(settings.governance_url))
        guard = Guard.from_settings(settings)
        used = UsedLinks(settings.secrets_dir / USED_LINKS_FILE)
        sessions = Sessions(verifier_for(settings.secrets_dir).verify_sign_in, used)
        quarantine_log = KafkaLog(kafka, client_id="accord-console-quarantine")
        stack.callback(quarantine_log.close)
        registry = HttpSchemaRegistry(str(settings.registry_url), token=ServiceTokens(settings.secrets_dir, "console"))
        stack.callback(registry.close)
        lag = GateLag(kafka, settings.gate_group)
        # The console already reads the gate group's positions (its user may): Prometheus gets them from here.
        stack.callback(register_gate_lag(partial(lag.streams, sorted(catalog.streams))))
        yield Console(sessions=sessions, engine=guard.engine, assets=ensure_console_assets(settings),
                      catalogue=lambda: _catalogue(view, policy()),
                      figures=GovernanceFigures(feed), deliveries=deliveries,
                      policy=policy, audit=AuditStatus(kafka, settings), lag=lag,
                      governance=governance, token_for=_issuer(settings),
                      quarantine=lambda stream, limit: newest_quarantine(quarantine_log, kafka, stream, limit),
                      schema_versions=lambda stream: schema_versions(registry, stream),
                      audit_lines=lambda: read_chain(kafka))


def newest_quarantine(log: KafkaLog, kafka: KafkaAccess, stream: str, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` quarantined entries of `stream`, newest first, each with where it sits: only the end of
    each partition is read (the quarantine of a busy stream is long), then merged newest offset first."""
    topic = quarantine_topic(stream)
    ends = {partition: end for (_, partition), end in end_positions(kafka, [topic]).items()}
    starts = {partition: max(0, end - limit) for partition, end in ends.items()}
    wanted = sum(ends[p] - starts[p] for p in ends)
    if wanted == 0:
        return []
    entries = [{"partition": r.partition, "offset": r.offset, **(json.loads(r.value) if r.value else {})}
               for r in log.read(topic, max_records=wanted, timeout_s=2.0, start_offset=starts)]
    return sorted(entries, key=lambda e: (e["offset"], e["partition"]), reverse=True)[:limit]


def _catalogue(view: Mapping[str, Any], state: PolicyState) -> dict[str, Any]:
    """The catalogue now: the console's catalog with the streams an applied catalog added, and what is in force."""
    return {**with_applied_streams(view, state.catalog), "agreements": _in_force(view, state)}


def _in_force(view: Mapping[str, Any], state: PolicyState) -> list[dict[str, Any]]:
    return in_force(view, state.catalog, state.revoked, state.grants, system_clock())


def schema_versions(registry: HttpSchemaRegistry, stream: str) -> list[dict[str, Any]]:
    """Every version of the stream's ingest schema the registry still holds, newest first, with its field names."""
    subject = value_subject(ingest_topic(stream))
    try:
        latest = registry.latest(subject)
    except RegistryError as exc:
        if exc.status == 404:       # nothing published yet: the ingest API registers the schema on first use
            return []
        raise
    found = []
    for number in range(latest.version, 0, -1):
        try:
            schema = latest if number == latest.version else registry.version(subject, number)
        except RegistryError:
            continue        # a version deleted from the subject
        try:
            fields = [str(f.get("name")) for f in json.loads(schema.schema).get("fields", ())]
        except (ValueError, AttributeError):
            fields = []
        found.append({"version": schema.version, "schema_id": schema.schema_id, "fields": fields})
    return found


def _issuer(settings: Settings) -> Callable[[Identity], str]:
    """Short-lived tokens for the signed-in person, so the governance API authorises each action as theirs. The
    console holds the API signing key for this, as `accord credentials token` does: run it where that key is."""
    key = signing_key(settings.secrets_dir)

    def token_for(identity: Identity) -> str:
        now = system_clock()
        ttl = min(TOKEN_TTL, identity.expires - now) if identity.expires > now else TOKEN_TTL
        return issue(key, identity.body, identity.role, identity.person, ttl, now)

    return token_for


def _deliveries(settings: Settings, kafka: KafkaAccess,
                stack: ExitStack) -> tuple[Deliveries, Callable[[], PolicyState]]:
    """The pull API's use case as the API builds it (runtime/api.py), and the control view it checks rights with."""
    if not settings.registry_url:
        raise ConfigError("the console needs ACCORD_REGISTRY_URL to decode deliveries (or `accord local up`)")
    log = KafkaDeliveryLog(kafka, client_id="accord-console-pull")
    stack.callback(log.close)
    control = ControlView(kafka, trusted_keys(settings.secrets_dir, settings.control_public_key),
                          client_id="accord-console-control", reader="console")
    stack.callback(control.close)
    registry = HttpSchemaRegistry(settings.registry_url, token=ServiceTokens(settings.secrets_dir, "console"))
    stack.callback(registry.close)
    deliveries = Deliveries(log, registry, lambda topic: delivery_access(control.current(), topic, system_clock()),
                            CursorCodec(cursor_secret(settings.secrets_dir)))
    return deliveries, control.current


def serve(settings: Settings, kafka: KafkaAccess, host: str, port: int) -> None:
    import uvicorn

    if not settings.opa_url:
        raise ConfigError("the console needs ACCORD_OPA_URL: OPA authorises every page")
    from broker.api.readiness import add_readiness
    from broker.runtime.probes import dependency_probes

    with open_console(settings, kafka) as console:
        app = add_readiness(create_console_app(console), dependency_probes(
            settings, kafka, registry_url=settings.registry_url, governance_url=settings.governance_url))
        uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = ["AuditStatus", "GovernanceFigures", "open_console", "serve"]
