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
from broker.services.kafka_identities import kafka_access

if TYPE_CHECKING:
    from broker.adapters.kafka_control import ControlWriter
    from broker.services.policy_changes import Announced

CATALOG_DIR = REPO_ROOT / "catalog"
SCHEMAS_DIR = REPO_ROOT / "schemas"

catalog_cli = typer.Typer(help="Bodies, streams and agreements as YAML: validate, compile, apply.",
                          no_args_is_help=True)
gate_cli = typer.Typer(help="Gate workers: deliver each subscriber's view of every stream.", no_args_is_help=True)
policy_cli = typer.Typer(help="Accord's Rego policies as a signed OPA bundle.", no_args_is_help=True)
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
    """Compile, push the catalog to OPA as data, and announce the revision to every gate worker."""
    from broker.adapters.kafka_control import ControlWriter, ensure_control_topics
    from broker.catalog import load_and_compile
    from broker.services.opa_tokens import WRITER, opa_engine
    from broker.services.policy_changes import apply_catalog

    document = load_and_compile(directory, SCHEMAS_DIR)
    endpoints = running_endpoints()
    ensure_control_topics(endpoints.kafka)
    engine, writer = opa_engine(endpoints.opa_url, Settings(), WRITER), ControlWriter(endpoints.kafka)
    try:
        announced = apply_catalog(writer, engine, document, by=by)
    finally:
        engine.close()
        writer.close()
    typer.echo(f"applied catalog {document['revision']} ({len(document['agreements'])} agreements) at control offset "
               f"{announced.offset}; policies are OPA's signed bundle (`accord policy bundle`)")
    if not Settings().kafka_bootstrap:
        # The local stack's admin keeps every body of the applied catalog a Kafka user with exactly its ACLs.
        from broker.services.kafka_identities import provision
        typer.echo(f"Kafka: {provision(endpoints.kafka, Settings().secrets_dir, document).describe()}")


@policy_cli.command("bundle")
def policy_bundle(
    output: Annotated[Path, typer.Argument(help="bundle file to write (.tar.gz)")],
    policy_dir: Annotated[Path, typer.Option(help="policies to bundle (tests left out)")] = REPO_ROOT / "policies",
) -> None:
    """Build policies/ into an OPA bundle signed with Accord's key (made on first use in the secrets dir).

    Run OPA with it: `opa run --server --bundle <file> --verification-key <.pub printed> --signing-alg EdDSA`.
    """
    from broker.local import toolchain
    from broker.services.bundles import SIGNING_ALG, build_bundle

    settings = Settings()
    bundle = build_bundle(toolchain.ensure_opa(settings), output, settings.secrets_dir, policy_dir)
    typer.echo(f"built {bundle.path} (revision {bundle.revision}), signed {SIGNING_ALG}; verification key "
               f"{bundle.public_key}")


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
    endpoints = GateEndpoints(kafka_access(settings, settings.kafka_bootstrap), settings.opa_url,
                              settings.registry_url)
    serve(endpoints, settings, host, port, worker_id)


@agreement_cli.command("revoke")
def agreement_revoke(agreement: Annotated[str, typer.Argument(help="agreement id")],
                     reason: Annotated[str, typer.Option(help="why (recorded)")], by: By) -> None:
    """Stop delivery under an agreement now; every gate worker enforces it within a second."""
    from broker.services.policy_changes import revoke

    _announce(lambda writer: revoke(writer, agreement, reason, by), f"revoked {agreement}")


@agreement_cli.command("reinstate")
def agreement_reinstate(agreement: Annotated[str, typer.Argument(help="agreement id")],
                        by: By = "accord agreement reinstate") -> None:
    """Lift a revocation."""
    from broker.services.policy_changes import reinstate

    _announce(lambda writer: reinstate(writer, agreement, by), f"reinstated {agreement}")


def _announce(change: Callable[[ControlWriter], Announced], what: str) -> None:
    from broker.adapters.kafka_control import ControlWriter, ensure_control_topics

    endpoints = running_endpoints()
    ensure_control_topics(endpoints.kafka)
    writer = ControlWriter(endpoints.kafka)
    try:
        announced = change(writer)
    finally:
        writer.close()
    typer.echo(f"{what} at control offset {announced.offset}")
