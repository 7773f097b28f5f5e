"""`accord drill run|verify|schedule`: exercise the emergency flows on a live deployment and sign the report.

`run` plays the people of each flow through the governance API (drill bodies added to the catalog for the run),
writes report.json (signed with the audit key), report.md and report.html into `<report-dir>/<run>/`, records the
report's digest in the audit chain, and exits 1 when a check failed. `verify` names any file altered after signing.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from broker.cli.context import current_settings, serve_scrape_port
from broker.domain.drills import parse_flows
from broker.domain.topics import CHAIN_TOPIC
from broker.errors import AccordError

if TYPE_CHECKING:
    from broker.domain.drills import Report
    from broker.runtime.drills import DrillRun

drill_cli = typer.Typer(help="Drills: exercise the template flows end to end and publish a signed report.",
                        no_args_is_help=True)

Flows = Annotated[str, typer.Option(help="`all` or flows separated by commas, e.g. T1,T3")]
ReportDir = Annotated[Path, typer.Option(help="where each run's report directory is written")]
TimeScale = Annotated[float, typer.Option(min=1.0, help="compress the ladder's deadlines by this factor")]


def _run_once(flows: str, report_dir: Path, time_scale: float) -> DrillRun:
    from broker.cli.policy import running_endpoints
    from broker.local.stack import LocalStack
    from broker.runtime.drill_processes import LocalProcesses
    from broker.runtime.drills import run_drill

    asked = parse_flows(flows)
    settings = current_settings()
    endpoints = running_endpoints()
    # The drill stops OPA and a gate worker only on the local stack: when every service an ACCORD_ variable names is
    # the local stack's own (as `accord local env` names them), none elsewhere.
    stack = LocalStack(settings)
    local = stack.names_only_its_own()
    return run_drill(settings, endpoints.kafka, settings.governance_url or endpoints.governance_url,
                     asked, report_dir, time_scale=time_scale,
                     deployment="local" if local else settings.governance_url or "external",
                     api_url=settings.api_url or endpoints.api_url,
                     registry_url=settings.registry_url or endpoints.registry_url,
                     processes=LocalProcesses(stack) if local else None)


@drill_cli.command("run")
def drill_run(flows: Flows = "all", report: ReportDir = Path("drill-reports"), time_scale: TimeScale = 1.0) -> None:
    """Run the drill's checks once; print each verdict and where the signed report is."""
    try:
        ran = _run_once(flows, report, time_scale)
    except AccordError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    done, directory = ran.report, ran.directory
    for check in done.checks:
        timing = "" if check.seconds is None else f" {check.seconds:.3f}s"
        typer.echo(f"{check.flow} {check.check}: {check.verdict}{timing} ({check.reason})")
    for problem in ran.problems:
        typer.echo(f"warning: {problem}", err=True)
    typer.echo(f"{done.run}: {done.verdict}; report in {directory} (report.html, report.md, signed report.json)")
    if done.verdict == "fail":
        raise typer.Exit(1)


@drill_cli.command("verify")
def drill_verify(
    report: Annotated[Path, typer.Argument(help="a report's directory or its report.json")],
    key: Annotated[Path | None, typer.Option(help="the audit public key (default: the secrets dir's "
                                                  "audit-signing.pub)")] = None,
    offline: Annotated[bool, typer.Option(help="do not look for the report's digest in the audit chain")] = False,
    topic: Annotated[str, typer.Option("--topic", help="the audit chain topic")] = CHAIN_TOPIC,
) -> None:
    """Check the report's signature and its renderings' digests, and that the audit chain recorded this report;
    name every file altered after signing."""
    from broker.domain.audit import key_id
    from broker.security.audit_keys import load_public_key, public_key_path
    from broker.services.drill_report import verify

    public = load_public_key(key or public_key_path(current_settings().secrets_dir))
    try:
        found, problems = verify(report, {key_id(public): public})
        unrecorded = [] if offline or problems else _unrecorded(report, topic)
    except AccordError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for problem in problems:
        typer.echo(f"ALTERED: {problem}")
    for problem in unrecorded:
        typer.echo(f"NOT RECORDED: {problem}")
    if problems or unrecorded:
        raise typer.Exit(1)
    assert found is not None
    chained = "not looked for (--offline)" if offline else "recorded in the audit chain"
    typer.echo(f"ok: {found.run} ({found.verdict}) signed with audit key {key_id(public)}; {chained}")


def _unrecorded(report: Path, topic: str) -> list[str]:
    from broker.cli.audit import chain_lines
    from broker.domain.audit import from_json_line
    from broker.domain.drill_signing import chain_problems
    from broker.services.drill_report import JSON_FILE

    signed = json.loads((report / JSON_FILE if report.is_dir() else report).read_text(encoding="utf-8"))
    events = (from_json_line(line, n).body.get("event") for n, line in enumerate(chain_lines(topic), start=1))
    return chain_problems(signed, events)


@drill_cli.command("schedule")
def drill_schedule(
    every: Annotated[str, typer.Option(help="how often, ISO 8601 (P7D, PT12H)")] = "P7D",
    flows: Flows = "all", report: ReportDir = Path("drill-reports"), time_scale: TimeScale = 1.0,
    webhook: Annotated[str | None, typer.Option(help="the operator's URL told of a failing check")] = None,
) -> None:
    """Run drills every period until stopped, with each flow's last result as Prometheus metrics
    (ACCORD_METRICS_PORT) and failing checks announced to the operator's webhook."""
    from broker.domain.access_requests import parse_duration
    from broker.runtime.drills import OperatorWebhook, schedule

    settings = current_settings()
    try:
        period = parse_duration(every, "--every")
        parse_flows(flows)
    except AccordError as exc:
        raise typer.BadParameter(str(exc)) from None
    serve_scrape_port(settings)
    alerts = OperatorWebhook(webhook, settings) if webhook else None
    if alerts is not None:
        typer.echo(f"operator webhook {webhook}: verify its X-Accord-Signature with {alerts.secret}", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def once() -> tuple[Report, str | None]:
        ran = _run_once(flows, report, time_scale)
        typer.echo(f"{ran.report.run}: {ran.report.verdict}; report in {ran.directory}")
        return ran.report, str(ran.directory)

    try:
        schedule(period, once, alerts or _Nobody(), stop).serve()
    finally:
        if alerts is not None:
            alerts.close()


class _Nobody:
    """No operator webhook was given: failures are in the log and the metrics only."""

    def announce(self, notification: Mapping[str, Any]) -> None:
        typer.echo(f"drill failed (no --webhook to tell): {notification}", err=True)
