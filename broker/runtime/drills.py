"""Wires `accord drill`: the governance API called as each person the drill plays (short-lived tokens from the
deployment's token key), the applied catalog read from the signed control topic, the report signed with the audit
key and its digest recorded on the governance log, and the scheduled loop's metrics and operator webhook."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.adapters.governance_http import GovernanceClient, HttpClient
from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_control import ControlView
from broker.adapters.metrics import PrometheusDrillMetrics
from broker.adapters.webhooks import WebhookNotifier
from broker.clock import Clock, system_clock
from broker.config import Settings
from broker.domain.drills import Report
from broker.domain.geography_files import load_la_table
from broker.domain.ladder import Actor
from broker.domain.webhooks import Webhook, parse_allow, signing_secret
from broker.errors import AccordError
from broker.runtime.drill_data import DeploymentData
from broker.runtime.drill_processes import KafkaDirectIngest
from broker.runtime.drill_topics import KafkaDrillTopics
from broker.security import api_tokens
from broker.security.audit_keys import audit_signing_key
from broker.security.control_keys import trusted_keys
from broker.security.secrets import webhook_secret
from broker.services import drill_report
from broker.services.drill_cleanup import remove_topics
from broker.services.drill_closed import Control, Processes
from broker.services.drill_flows import OPERATOR, drills_for, tear_down
from broker.services.drill_runner import DrillRunner
from broker.services.drill_schedule import DrillSchedule, OperatorAlerts

TOKEN_TTL = dt.timedelta(minutes=15)
# The operator's webhook is signed as a body's would be: with a secret derived from the governance service's
# master secret, for the operator (body `accord`) and this registration.
OPERATOR_REGISTRATION = "drill-schedule"


class TokenGovernanceCalls:
    """The governance API, each call with a fresh token for the person acting."""

    def __init__(self, client: GovernanceClient, secrets_dir: Path, clock: Clock = system_clock) -> None:
        self._client, self._key, self._clock = client, api_tokens.signing_key(secrets_dir), clock

    def call(self, method: str, path: str, actor: Actor, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        token = api_tokens.issue(self._key, actor.body, actor.role, actor.person, TOKEN_TTL, self._clock())
        return dict(self._client.call(method, path, token, body))


class ControlCatalog:
    """The catalog in force, folded from the signed control topic."""

    def __init__(self, kafka: KafkaAccess, settings: Settings) -> None:
        self._kafka, self._keys = kafka, trusted_keys(settings.secrets_dir, settings.control_public_key)

    def current(self) -> Mapping[str, Any] | None:
        view = ControlView(self._kafka, self._keys, client_id="accord-drill-catalog", reader="drill")
        try:
            return view.current().catalog
        finally:
            view.close()


@dataclass(frozen=True)
class DrillRun:
    report: Report
    directory: Path
    digest: str
    problems: tuple[str, ...]   # what the drill could not undo or record; empty when all went well


def run_drill(settings: Settings, kafka: KafkaAccess, governance_url: str, flows: Sequence[str], report_dir: Path,
              *, time_scale: float = 1.0, deployment: str = "local", client: HttpClient | None = None,
              clock: Clock = system_clock, api_url: str | None = None, registry_url: str | None = None,
              processes: Processes | None = None) -> DrillRun:
    """One drill of `flows`: its checks, the drill bodies (and drill streams) removed again, the signed report written
    to `<report_dir>/<run>/` and its digest recorded in the audit chain through the governance service. Without
    `api_url` and `registry_url` there are no drill streams, and the checks needing records are not run. With
    `processes` (given only for the local stack, whose processes the drill may stop) the fail-closed check runs."""
    runner = DrillRunner(deployment, clock, time_scale=time_scale)
    data = (DeploymentData(settings, kafka, api_url, registry_url, OPERATOR, clock)
            if api_url and registry_url else None)
    catalog = ControlCatalog(kafka, settings)
    direct = (KafkaDirectIngest(kafka, registry_url, settings, catalog.current)
              if processes is not None and registry_url and data is not None else None)
    control = Control(processes, direct) if processes is not None and direct is not None else None
    with GovernanceClient(governance_url, client=client) as governance:
        api = TokenGovernanceCalls(governance, settings.secrets_dir, clock)
        short = uuid.uuid4().hex[:6]
        drills, checks = drills_for(flows, short, api, catalog, data, control, time_scale=time_scale,
                                    geography=load_la_table(settings.geography_dir))
        try:
            report = runner.run(flows, checks, run_id=f"drill-{clock():%Y%m%dT%H%M%SZ}-{short}")
        finally:
            problems = tear_down(drills)
            if data is not None:
                data.close()
                # After the catalog without them is in force: what the drill's streams and bodies left in Kafka.
                problems += remove_topics(KafkaDrillTopics(kafka), catalog, short,
                                          [d.twin.stream for d in drills if d.twin is not None])
            if direct is not None:
                direct.close()
        directory = report_dir / report.run
        signed = drill_report.write(report, directory, audit_signing_key(settings.secrets_dir))
        digest = str(signed["signature"]["digest"])
        record = {"run": report.run, "deployment": deployment, "digest": digest,
                  "key_id": signed["signature"]["key_id"], "verdict": report.verdict, "counts": report.counts(),
                  "finished_at": signed["report"]["finished_at"]}
        try:
            api.call("POST", "/drill-reports", OPERATOR, record)
        except AccordError as exc:
            problems.append(f"the report's digest is not in the audit chain: {exc}")
    return DrillRun(report, directory, digest, tuple(problems))


class OperatorWebhook:
    """Announces to the operator's webhook URL, signed as Accord signs every webhook (X-Accord-Signature)."""

    def __init__(self, url: str, settings: Settings, **options: Any) -> None:
        """`options` go to the WebhookNotifier (retries; tests pass a transport and a resolver)."""
        self._master = webhook_secret(settings.secrets_dir)
        self._notifier = WebhookNotifier(lambda _: Webhook(url, OPERATOR_REGISTRATION), self._master,
                                         allow=parse_allow(settings.webhook_allow), **options)

    @property
    def secret(self) -> str:
        """What the operator's receiver verifies with."""
        return signing_secret(self._master, OPERATOR.body, OPERATOR_REGISTRATION)

    def announce(self, notification: Mapping[str, Any]) -> None:
        self._notifier.notify(OPERATOR.body, notification)

    def wait_idle(self, timeout_s: float) -> bool:
        return self._notifier.wait_idle(timeout_s)

    def close(self) -> None:
        self._notifier.close()


def schedule(every: dt.timedelta, run_once: Callable[[], tuple[Report, str | None]], alerts: OperatorAlerts,
             stop: threading.Event) -> DrillSchedule:
    """The scheduled loop with Prometheus metrics; `stop` set (a signal) ends it between runs."""
    return DrillSchedule(every, run_once, PrometheusDrillMetrics(), alerts, system_clock, stop.wait)
