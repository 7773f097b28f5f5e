"""`accord catalog|gate|agreement`: agreements as code, gate workers and live policy changes.

Applying the catalog and revoking or reinstating an agreement are calls to the governance service with the acting
person's token (`--token`), as disputes and emergency levels are (cli/governance.py): OPA decides who may, the
service signs the control record, and the audit trail names the person the token names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer

from broker.cli.context import current_settings, serve_scrape_port
from broker.errors import AccordError, RegistryError
from broker.local import stack as local_stack
from broker.security.kafka_identities import kafka_access

if TYPE_CHECKING:
    from broker.catalog.compiler import LoadedCatalog

catalog_cli = typer.Typer(help="Bodies, streams and agreements as YAML: validate, compile, apply.",
                          no_args_is_help=True)
gate_cli = typer.Typer(help="Gate workers: deliver each subscriber's view of every stream.", no_args_is_help=True)
policy_cli = typer.Typer(help="Accord's Rego policies as a signed OPA bundle.", no_args_is_help=True)
agreement_cli = typer.Typer(help="Revoke or reinstate an agreement on the live streams; its review tasks.",
                            no_args_is_help=True)

CatalogDir = Annotated[Path | None, typer.Argument(help="catalog directory (default: ACCORD_CATALOG_DIR)")]
# The person acting, as their API token: every command that calls the governance service takes it.
ActingAs = Annotated[str | None, typer.Option(
    "--token", envvar="ACCORD_TOKEN", metavar="TOKEN|@FILE", show_default=False,
    help="the API token of whoever acts, or @file holding it (`accord credentials token` issues one)")]


def compile_catalog_dir(directory: Path | None) -> dict[str, Any]:
    """The catalog in `directory` (default: the settings' catalog) compiled against its streams' schemas."""
    settings = current_settings()
    return load_catalog_dir(directory or settings.catalog_dir, settings.schemas_dir).document


def load_catalog_dir(directory: Path, schemas_dir: Path) -> LoadedCatalog:
    from broker.catalog.compiler import load_catalog_dir as load

    return load(directory, schemas_dir)


def running_endpoints() -> local_stack.Endpoints:
    """The services `accord local up` started, or the external ones the ACCORD_ variables name."""
    endpoints = local_stack.LocalStack(current_settings()).endpoints()
    if endpoints is None:
        raise AccordError("Accord's services are not running: run `accord local up` (or set the ACCORD_ URLs)")
    return endpoints


@catalog_cli.command("validate")
def catalog_validate(directory: CatalogDir = None) -> None:
    """Check every catalog file; errors name the file, line and field."""

    document = compile_catalog_dir(directory)
    counts = {k: len(document[k]) for k in ("bodies", "streams", "agreements")}
    typer.echo(f"{directory or current_settings().catalog_dir}: valid, revision {document['revision']}: "
               + ", ".join(f"{n} {k}" for k, n in counts.items()))


@catalog_cli.command("compile")
def catalog_compile(directory: CatalogDir = None) -> None:
    """Print the OPA data document the catalog compiles to."""

    typer.echo(json.dumps(compile_catalog_dir(directory), indent=2, sort_keys=True))


@catalog_cli.command("apply")
def catalog_apply(directory: CatalogDir = None, token: ActingAs = None) -> None:
    """Compile the catalog, register each stream's schema in the schema registry under its subject (an incompatible
    change is refused, and nothing applied), and apply it through the governance service (Accord's operator only: a
    token for body `accord`, role `operator`), which signs it, announces it to every gate worker and pushes it to
    OPA. A new stream is taken on by the running API and gate workers, without a restart."""
    from broker.cli.governance import call, fail, parse_actor
    from broker.runtime.streams import registered_catalog

    acting = parse_actor(token)
    settings = current_settings()
    loaded = load_catalog_dir(directory or settings.catalog_dir, settings.schemas_dir)
    registry_url = settings.registry_url or running_endpoints().registry_url
    try:
        document = registered_catalog(loaded, registry_url, lambda: acting)
    except RegistryError as exc:
        fail(f"registering the streams' schemas failed, nothing was applied: {exc}")
    answer = call("PUT", "/catalog", acting, {"catalog": document})
    typer.echo(f"applied catalog {answer['revision']} ({answer['agreements']} agreements) at control offset "
               f"{answer['control']['offset']} by {_who(answer['by'])}; policies are OPA's signed bundle "
               "(`accord policy bundle`)")
    if not current_settings().kafka_bootstrap:
        # The local stack's admin keeps every body of the applied catalog a Kafka user with exactly its ACLs.
        from broker.security.kafka_identities import provision
        provisioned = provision(running_endpoints().kafka, current_settings().secrets_dir, document)
        typer.echo(f"Kafka: {provisioned.describe()}")


@policy_cli.command("bundle")
def policy_bundle(
    output: Annotated[Path, typer.Argument(help="bundle file to write (.tar.gz)")],
    policy_dir: Annotated[Path | None, typer.Option(help="policies to bundle (tests left out)")] = None,
) -> None:
    """Build policies/ into an OPA bundle signed with Accord's key (made on first use in the secrets dir).

    Run OPA with it: `opa run --server --bundle <file> --verification-key <.pub printed> --signing-alg EdDSA`.
    """
    from broker.local import toolchain
    from broker.security.bundles import SIGNING_ALG, build_bundle

    settings = current_settings()
    bundle = build_bundle(toolchain.ensure_opa(settings), output, settings.secrets_dir,
                          policy_dir or settings.policies_dir)
    typer.echo(f"built {bundle.path} (revision {bundle.revision}), signed {SIGNING_ALG}; verification key "
               f"{bundle.public_key}")


@gate_cli.command("serve")
def gate_serve(
    host: Annotated[str, typer.Option(help="address for /health and /metrics")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port for /health and /metrics")] = 8090,
    worker_id: Annotated[str | None, typer.Option(
        help="name the worker yourself (transactional id accord-gate-ID); default: its slot's <group>-<slot>")] = None,
    slot: Annotated[int | None, typer.Option(
        min=0, help="the worker's slot in its group (default ACCORD_GATE_SLOT, 0): give each live worker its own; "
                    "a worker restarted in a slot fences the transaction its crashed predecessor left open")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="run this many workers in this process, in consecutive slots from --slot (default "
                    "ACCORD_GATE_WORKERS, 1)")] = None,
) -> None:
    """Run one gate worker (any number share the work, each in its own slot); needs ACCORD_KAFKA_BOOTSTRAP,
    _OPA_URL, _REGISTRY_URL. A second live worker started in the same slot takes it over and the first stops."""
    from broker.runtime.gate import GateEndpoints, serve

    settings = current_settings()
    if slot is not None:
        settings = settings.model_copy(update={"gate_slot": slot})
    if not (settings.kafka_bootstrap and settings.opa_url and settings.registry_url):
        raise AccordError("the gate needs ACCORD_KAFKA_BOOTSTRAP, ACCORD_OPA_URL and ACCORD_REGISTRY_URL")
    endpoints = GateEndpoints(kafka_access(settings, settings.kafka_bootstrap), settings.opa_url,
                              settings.registry_url)
    serve_scrape_port(settings)
    serve(endpoints, settings, host, port, worker_id, workers or settings.gate_workers)


@agreement_cli.command("revoke")
def agreement_revoke(agreement: Annotated[str, typer.Argument(help="agreement id")],
                     reason: Annotated[str, typer.Option(help="why (recorded)")], token: ActingAs = None) -> None:
    """Stop delivery under an agreement now (its publisher's IG lead, the governance board or the arbiter); every
    gate worker enforces it within a second."""
    _change_agreement(agreement, "revoke", reason, token)


@agreement_cli.command("reinstate")
def agreement_reinstate(agreement: Annotated[str, typer.Argument(help="agreement id")],
                        reason: Annotated[str, typer.Option(help="why (recorded)")] = "",
                        token: ActingAs = None) -> None:
    """Lift a revocation (the same people as revoke)."""
    _change_agreement(agreement, "reinstate", reason, token)


def _change_agreement(agreement: str, change: str, reason: str, token: str | None) -> None:
    from broker.cli.governance import call, fail, parse_actor

    acting = parse_actor(token)
    if change == "revoke" and not reason.strip():
        fail("a revocation needs a reason (--reason)")
    answer = call("POST", f"/agreements/{quote(agreement, safe='')}/{change}", acting, {"reason": reason})
    typer.echo(f"{change}d {agreement} at control offset {answer['control']['offset']} by {_who(answer['by'])}")


@agreement_cli.command("reviews")
def agreement_reviews(body: Annotated[str | None, typer.Option(help="only tasks where this body is a party")] = None,
                      state: Annotated[str | None, typer.Option(help="open or completed")] = None,
                      as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False,
                      token: ActingAs = None) -> None:
    """Review tasks: one is raised when an agreement's review date comes, and stays open until a party's IG lead,
    the governance board or the arbiter records the review (`accord agreement review-done`)."""
    from broker.cli.governance import call, parse_actor

    params = {k: v for k, v in (("body", body), ("state", state)) if v is not None}
    tasks = call("GET", "/reviews", parse_actor(token), params=params)["reviews"]
    if as_json:
        typer.echo(json.dumps(tasks, indent=2, sort_keys=True))
        return
    if not tasks:
        typer.echo("no review tasks")
    for task in tasks:
        done = task.get("completed") or {}
        typer.echo(f"{task['task']}  {task['state']}  agreement {task['agreement']} review date {task['review_date']}"
                   f"  ({task['subscriber']} from {task['publisher']})"
                   + (f"  done {done.get('at')}: {done.get('note')}" if done else ""))


@agreement_cli.command("review-done")
def agreement_review_done(task: Annotated[str, typer.Argument(help="review task id (from `agreement reviews`)")],
                          note: Annotated[str, typer.Option(help="what the review found and decided")],
                          token: ActingAs = None) -> None:
    """Record that an agreement's review was done, and what it found."""
    from broker.cli.governance import call, parse_actor

    answer = call("POST", f"/reviews/{quote(task, safe='')}/completion", parse_actor(token), {"note": note})
    typer.echo(f"{task} completed by {_who(answer['completed']['by'])}")


def _who(actor: dict[str, str]) -> str:
    return f"{actor['person']} ({actor['role']}, {actor['body']})"
