"""The `accord` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from broker.adapters.kafka_access import KafkaAccess
from broker.cli import (
    audit as cli_audit,
)
from broker.cli import (
    backfill as cli_backfill,
)
from broker.cli import (
    connect as cli_connect,
)
from broker.cli import (
    credentials as cli_credentials,
)
from broker.cli import (
    deploy as cli_deploy,
)
from broker.cli import (
    drill as cli_drill,
)
from broker.cli import (
    geography as cli_geography,
)
from broker.cli import (
    governance as cli_governance,
)
from broker.cli import (
    kafka as cli_kafka,
)
from broker.cli import (
    optout as cli_optout,
)
from broker.cli import (
    policy as cli_policy,
)
from broker.cli import (
    requests as cli_requests,
)
from broker.cli.context import current_settings, serve_scrape_port
from broker.config import Settings
from broker.errors import AccordError
from broker.local import stack as local_stack
from broker.local import toolchain
from broker.security.kafka_identities import kafka_access

app = typer.Typer(help="Accord: emergency data sharing between public bodies.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
local = typer.Typer(help="Run a real Kafka and OPA on loopback for development and tests.",
                    no_args_is_help=True)
app.add_typer(local, name="local")
registry_cli = typer.Typer(help="The Confluent-compatible schema registry.", no_args_is_help=True)
app.add_typer(registry_cli, name="registry")
api_cli = typer.Typer(help="Accord's HTTP API (publish, quarantine, metrics).", no_args_is_help=True)
app.add_typer(api_cli, name="api")
app.add_typer(cli_policy.catalog_cli, name="catalog")
app.add_typer(cli_policy.gate_cli, name="gate")
app.add_typer(cli_policy.agreement_cli, name="agreement")
app.add_typer(cli_policy.policy_cli, name="policy")
app.add_typer(cli_governance.dispute_cli, name="dispute")
app.add_typer(cli_requests.request_cli, name="request")
app.add_typer(cli_governance.emergency_cli, name="emergency")
app.add_typer(cli_governance.webhook_cli, name="webhook")
app.command("break-glass")(cli_governance.break_glass)
app.add_typer(cli_audit.audit_cli, name="audit")
app.add_typer(cli_drill.drill_cli, name="drill")
app.add_typer(cli_kafka.kafka_cli, name="kafka")
app.add_typer(cli_credentials.credentials_cli, name="credentials")
app.add_typer(cli_optout.optout_cli, name="optout")
app.add_typer(cli_connect.connect_cli, name="connect")
app.add_typer(cli_backfill.backfill_cli, name="backfill")
app.add_typer(cli_geography.geography_cli, name="geography")
app.add_typer(cli_deploy.deploy_cli, name="deploy")
governance_cli = typer.Typer(help="The governance service: disputes, the ladder's deadlines, declarations.",
                             no_args_is_help=True)
app.add_typer(governance_cli, name="governance")


@governance_cli.command("serve")
def governance_serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8090,
) -> None:
    """Serve the governance API and fire the ladder's deadlines (needs ACCORD_KAFKA_BOOTSTRAP)."""
    from broker.runtime.governance import serve
    from broker.security.audit_keys import audit_signing_key

    settings = current_settings()
    if not settings.kafka_bootstrap:
        raise AccordError("the governance service needs ACCORD_KAFKA_BOOTSTRAP (or `accord local up`)")
    serve_scrape_port(settings)
    serve(settings, kafka_access(settings, settings.kafka_bootstrap), host, port,
          audit_signing_key(settings.secrets_dir))


console_cli = typer.Typer(help="The Accord Console: web pages for members, and the public transparency page.",
                          no_args_is_help=True)
app.add_typer(console_cli, name="console")


@console_cli.command("serve")
def console_serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8070,
) -> None:
    """Serve the console (needs ACCORD_KAFKA_BOOTSTRAP and ACCORD_OPA_URL, or `accord local up`)."""
    from broker.runtime.console import serve

    settings = current_settings()
    if not settings.kafka_bootstrap:
        raise AccordError("the console needs ACCORD_KAFKA_BOOTSTRAP (or `accord local up`)")
    serve_scrape_port(settings)
    serve(settings, kafka_access(settings, settings.kafka_bootstrap), host, port)


@local.command("fetch")
def local_fetch() -> None:
    """Fetch the Kafka jars (Maven) and build OPA (go install) into the cache, if not there yet."""
    settings = current_settings()
    libs = toolchain.ensure_kafka_jars(settings)
    opa = toolchain.ensure_opa(settings)
    assets = toolchain.ensure_console_assets(settings)
    typer.echo(f"kafka {settings.kafka_version}: {libs}")
    typer.echo(f"opa {settings.opa_version}: {opa}")
    typer.echo(f"console assets (govuk-frontend, axe-core): {assets}")


@local.command("which")
def local_which(tool: Annotated[str, typer.Argument(help="opa, kafka-libs, prometheus or promtool")]) -> None:
    """Print the cached path of a tool (for scripts and the Makefile)."""
    settings = current_settings()
    paths = {"opa": settings.opa_binary, "kafka-libs": settings.kafka_libs}
    if tool in ("prometheus", "promtool"):
        from broker.local.prometheus_server import ensure_binaries

        server, promtool = ensure_binaries()   # Debian's package, installed first when missing (as root)
        typer.echo(str(server if tool == "prometheus" else promtool))
        return
    if tool not in paths:
        raise AccordError(f"unknown tool {tool!r}: choose one of {', '.join(paths)}")
    typer.echo(str(paths[tool]))


@local.command("up")
def local_up(
    postgres: Annotated[bool, typer.Option(help="also start PostgreSQL for the sinks (installing Debian's "
                                                "package as root if missing)")] = False,
    supervise: Annotated[bool, typer.Option(help="run `accord local supervise` beside them, which starts a "
                                                 "crashed service again (on by default)")] = True,
    brokers: Annotated[int | None, typer.Option(
        min=1, max=5, help="how many Kafka brokers (KRaft, each also a controller, on loopback); default: as many "
                           "as the state directory's Kafka has, else 1")] = None,
) -> None:
    """Start Kafka and OPA (fetching/building them first if needed), Accord's services, and a supervisor that
    restarts any of them that crashes; idempotent: a broker, or any service, that is not running is started again on
    its own ports."""
    settings = current_settings()
    if brokers is not None:
        settings = settings.model_copy(update={"kafka_brokers": brokers})
    stack = local_stack.LocalStack(settings)
    endpoints = stack.up()
    if postgres:
        from broker.local.postgres_server import password_file

        typer.echo(f"postgres: {stack.up_postgres()} (password in {password_file(stack.settings.secrets_dir)})")
    if supervise:
        stack.supervisor.start({"ACCORD_STATE_DIR": str(stack.root)})
    for line in local_stack.describe(stack.status()):
        typer.echo(line)
    typer.echo("# eval \"$(accord local env)\" to point other tools at them")
    del endpoints


@local.command("status")
def local_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show whether each service runs and answers, and whether it is ready (what it needs answers, its loop
    progresses) or why not; exit 1 if one is down or not ready."""
    states = local_stack.LocalStack(current_settings()).status()
    typer.echo(local_stack.as_json(states) if as_json else "\n".join(local_stack.describe(states)))
    if not all(s.running and s.ready is not False for s in states):
        raise typer.Exit(1)


@local.command("supervise")
def local_supervise() -> None:
    """Watch the local services and start a crashed one again on its port, with backoff (`accord local up` runs
    this in the background; `accord local down` stops it). Logs each restart to stdout."""
    from broker.domain.restart_policy import Backoff
    from broker.local.supervisor import Supervisor, stderr_log

    settings = current_settings()
    try:
        policy = Backoff(settings.supervise_first_backoff_s, 2.0, settings.supervise_max_backoff_s,
                         settings.supervise_healthy_s)
    except ValueError as exc:
        raise AccordError(f"ACCORD_SUPERVISE_*: {exc}") from exc
    Supervisor(local_stack.LocalStack(settings), policy, stderr_log).run()


@local.command("hold")
def local_hold(
    service: Annotated[str, typer.Argument(help="kafka, opa, postgres, registry, api, governance, console or gate")],
    seconds: Annotated[float, typer.Option(help="how long; 0 lifts a hold")] = 300.0,
) -> None:
    """Have the supervisor leave SERVICE alone for a while: if it stops (for maintenance, or a fault drill) it is
    not started again until the hold ends."""
    stack = local_stack.LocalStack(current_settings())
    if service not in stack.managed():
        raise AccordError(f"no local service {service!r}: choose one of {', '.join(stack.managed())}")
    stack.supervisor.hold(service, seconds)
    typer.echo(f"{service}: left alone for {seconds:.0f} s" if seconds > 0 else f"{service}: supervised again")


@local.command("env")
def local_env() -> None:
    """Print ACCORD_* lines for `eval`; exit 1 if the services are not up."""
    endpoints = local_stack.LocalStack(current_settings()).endpoints()
    if endpoints is None:
        raise AccordError("the local services are not running: run `accord local up` first")
    for line in endpoints.env_lines():
        typer.echo(line)


@local.command("down")
def local_down(wipe: Annotated[bool, typer.Option(help="also delete Kafka's data")] = False) -> None:
    """Stop the services `accord local up` started (external ones are left alone)."""
    stopped = local_stack.LocalStack(current_settings()).down(wipe=wipe)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@registry_cli.command("serve")
def registry_serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8081,
) -> None:
    """Serve the registry; its state lives in a compacted Kafka topic (ACCORD_KAFKA_BOOTSTRAP)."""
    from broker.runtime.registry import serve

    settings = current_settings()
    kafka = kafka_access(settings, settings.kafka_bootstrap) if settings.kafka_bootstrap else _local_kafka(settings)
    serve_scrape_port(settings)
    serve(settings, kafka, host, port)


def _local_kafka(settings: Settings) -> KafkaAccess:
    endpoints = local_stack.LocalStack(settings).endpoints()
    if endpoints is None:
        raise AccordError("no Kafka to store schemas in: set ACCORD_KAFKA_BOOTSTRAP or run `accord local up`")
    return endpoints.kafka


@api_cli.command("serve")
def api_serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
) -> None:
    """Serve the API (needs ACCORD_KAFKA_BOOTSTRAP and ACCORD_REGISTRY_URL, or `accord local up`)."""
    from broker.runtime.api import serve

    settings = current_settings()
    bootstrap, registry = settings.kafka_bootstrap, settings.registry_url
    if not (bootstrap and registry):
        raise AccordError("the API needs ACCORD_KAFKA_BOOTSTRAP and ACCORD_REGISTRY_URL")
    serve_scrape_port(settings)
    serve(settings, kafka_access(settings, bootstrap), registry, host, port)


_endpoints = cli_policy.running_endpoints


@app.command("publish")
def publish(
    stream: Annotated[str, typer.Argument(help="stream id, e.g. ukhsa.positive-tests")],
    file: Annotated[Path, typer.Argument(help="JSON Lines file, one record per line (dates as ISO strings)")],
) -> None:
    """Publish records; each is accepted onto ingest.<stream> or quarantined with its reasons."""
    from broker.runtime.api import open_ingest

    lines, records = _read_jsonl(file)
    endpoints = _endpoints()
    with open_ingest(endpoints.kafka, endpoints.registry_url, current_settings()) as (ingest, _):
        outcomes = ingest.publish(stream, records, source=f"file:{file.name}")
    for o in outcomes:
        why = "; ".join(f"{r.field}: {r.rule} ({r.message})" for r in o.reasons)
        typer.echo(f"{file}:{lines[o.index]}: {o.status} → {o.topic}[{o.partition}]@{o.offset} {why}".rstrip())
    quarantined = sum(o.status == "quarantined" for o in outcomes)
    typer.echo(f"{len(outcomes) - quarantined} accepted, {quarantined} quarantined")


def _read_jsonl(file: Path) -> tuple[list[int], list[Any]]:
    """The records of a JSON Lines file and the line number each came from (blank lines are skipped)."""
    numbers, records = [], []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AccordError(f"{file}:{number}: not JSON: {exc.msg} at column {exc.colno}") from exc
        numbers.append(number)
    return numbers, records


@app.command("quarantine")
def quarantine(stream: Annotated[str, typer.Argument(help="stream id")],
               limit: Annotated[int, typer.Option(help="at most this many entries")] = 100) -> None:
    """Why were my rows not delivered? Print the quarantined entries of a stream as JSON lines."""
    from broker.adapters.kafka_log import KafkaLog
    from broker.services.ingest import read_quarantine

    log = KafkaLog(_endpoints().kafka)
    try:
        for entry in read_quarantine(log, stream, limit):
            typer.echo(json.dumps(entry, default=str))
    finally:
        log.close()


@app.command("demo")
def demo() -> None:
    """A day of positive tests through the gate to each council's view, one council's PostgreSQL sink filling its
    table, a live revocation and a dispute decided and enforced."""
    from broker.demo import job as demo_job

    settings = current_settings()
    stack = local_stack.LocalStack(settings)
    endpoints = stack.endpoints() or stack.up()
    # The stack's own gate worker delivers when it runs; otherwise (services elsewhere) the demo runs one.
    dsn = stack.up_postgres()  # the demo's council keeps its rows in a PostgreSQL the stack runs
    demo_job.run(endpoints, settings, say=typer.echo, own_gate=not stack.gate.running(), postgres_dsn=dsn)


def main() -> None:
    try:
        app()
    except AccordError as exc:
        typer.echo(f"accord: error: {exc}", err=True)
        sys.exit(1)
