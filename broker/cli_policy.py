"""`accord catalog|gate|agreement`: agreements as code, gate workers and live policy changes (emergency levels are
declared through the governance service: see cli_governance.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from broker.config import Settings
from broker.errors import AccordError
from broker.local import stack as local_stack
from broker.local.toolchain import REPO_ROOT

if TYPE_CHECKING:
    from broker.adapters.kafka_control import ControlWriter
    from broker.services.policy_changes import Announced

CATALOG_DIR = REPO_ROOT / "catalog"
SCHEMAS_DIR = REPO_ROOT / "schemas"

catalog_cli = typer.Typer(help="Bodies, streams and agreements as YAML: validate, compile, apply.",
                          no_args_is_help=True)
gate_cli = typer.Typer(help="Gate workers: deliver each subscriber's view of every stream.", no_args_is_help=True)
agreement_cli = typer.Typer(help="Revoke or reinstate an agreement on the live streams.", no_args_is_help=True)

CatalogDir = Annotated[Path, typer.Argument(help="catalog directory")]
By = Annotated[str, typer.Option(help="who makes the change (recorded on the control topic)")]


def running_endpoints() -> local_stack.Endpoints:
    """The services `accord local up` started, or the external ones the ACCORD_ variables name."""
    endpoints = local_stack.LocalStack(Settings()).endpoints()
    if endpoints is None:
        raise AccordError("Accord's services are not running: run `accord local up` (or set the ACCORD_ URLs)")
    return endpoints


@catalog_cli.command("validate")
def catalog_validate(directory: CatalogDir = CATALOG_DIR) -> None:
    """Check every catalog file; errors name the file, line and field."""
    from broker.catalog import load_and_compile

    document = load_and_compile(directory, SCHEMAS_DIR)
    counts = {k: len(document[k]) for k in ("bodies", "streams", "agreements")}
    typer.echo(f"{directory}: valid, revision {document['revision']}: "
               + ", ".join(f"{n} {k}" for k, n in counts.items()))


@catalog_cli.command("compile")
def catalog_compile(directory: CatalogDir = CATALOG_DIR) -> None:
    """Print the OPA data document the catalog compiles to."""
    from broker.catalog import load_and_compile

    typer.echo(json.dumps(load_and_compile(directory, SCHEMAS_DIR), indent=2, sort_keys=True))


@catalog_cli.command("apply")
def catalog_apply(directory: CatalogDir = CATALOG_DIR, by: By = "accord catalog apply") -> None:
    """Compile, push policies and data to OPA, and announce the revision to every gate worker."""
    from broker.adapters.kafka_control import ControlWriter, ensure_control_topics
    from broker.adapters.opa import OpaPolicyEngine
    from broker.catalog import load_and_compile
    from broker.services.policies import load_policies
    from broker.services.policy_changes import apply_catalog

    document = load_and_compile(directory, SCHEMAS_DIR)
    endpoints = running_endpoints()
    ensure_control_topics(endpoints.kafka_bootstrap)
    engine, writer = OpaPolicyEngine(endpoints.opa_url), ControlWriter(endpoints.kafka_bootstrap)
    try:
        modules = load_policies(engine)
        announced = apply_catalog(writer, engine, document, by=by)
    finally:
        engine.close()
        writer.close()
    typer.echo(f"applied catalog {document['revision']} ({len(document['agreements'])} agreements, policy modules "
               f"{', '.join(modules)}) at control offset {announced.offset}")


@gate_cli.command("serve")
def gate_serve(
    host: Annotated[str, typer.Option(help="address for /health and /metrics")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port for /health and /metrics")] = 8090,
    worker_id: Annotated[str | None, typer.Option(help="stable id (its transactional id); default host-pid")] = None,
) -> None:
    """Run one gate worker (any number share the work); needs ACCORD_KAFKA_BOOTSTRAP, _OPA_URL, _REGISTRY_URL."""
    from broker.services.gate_runtime import GateEndpoints, serve

    settings = Settings()
    if not (settings.kafka_bootstrap and settings.opa_url and settings.registry_url):
        raise AccordError("the gate needs ACCORD_KAFKA_BOOTSTRAP, ACCORD_OPA_URL and ACCORD_REGISTRY_URL")
    serve(GateEndpoints(settings.kafka_bootstrap, settings.opa_url, settings.registry_url), settings, host, port,
          worker_id)


@agreement_cli.command("revoke")
def agreement_revoke(agreement: Annotated[str, typer.Argument(help="agreement id")],
                     reason: Annotated[str, typer.Option(help="why (recorded)")], by: By) -> None:
    """Stop delivery under an agreement now; every gate worker enforces it within a second."""
    from broker.services.policy_changes import revoke

    _announce(lambda writer: revoke(writer, agreement, reason, by), f"revoked {agreement}")


@agreement_cli.command("reinstate")
def agreement_reinstate(agreement: Annotated[str, typer.Argument(help="agreement id")]) -> None:
    """Lift a revocation."""
    from broker.services.policy_changes import reinstate

    _announce(lambda writer: reinstate(writer, agreement), f"reinstated {agreement}")


def _announce(change: Callable[[ControlWriter], Announced], what: str) -> None:
    from broker.adapters.kafka_control import ControlWriter, ensure_control_topics

    endpoints = running_endpoints()
    ensure_control_topics(endpoints.kafka_bootstrap)
    writer = ControlWriter(endpoints.kafka_bootstrap)
    try:
        announced = change(writer)
    finally:
        writer.close()
    typer.echo(f"{what} at control offset {announced.offset}")
