"""The `accord` command."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from broker.config import Settings
from broker.errors import AccordError
from broker.local import stack as local_stack
from broker.local import toolchain

app = typer.Typer(help="Accord: emergency data sharing between public bodies.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
local = typer.Typer(help="Run a real Kafka and OPA on loopback for development and tests.",
                    no_args_is_help=True)
app.add_typer(local, name="local")
registry_cli = typer.Typer(help="The Confluent-compatible schema registry.", no_args_is_help=True)
app.add_typer(registry_cli, name="registry")


@local.command("fetch")
def local_fetch() -> None:
    """Fetch the Kafka jars (Maven) and build OPA (go install) into the cache, if not there yet."""
    settings = Settings()
    libs = toolchain.ensure_kafka_jars(settings)
    opa = toolchain.ensure_opa(settings)
    typer.echo(f"kafka {settings.kafka_version}: {libs}")
    typer.echo(f"opa {settings.opa_version}: {opa}")


@local.command("which")
def local_which(tool: Annotated[str, typer.Argument(help="opa or kafka-libs")]) -> None:
    """Print the cached path of a tool (for scripts and the Makefile)."""
    settings = Settings()
    paths = {"opa": settings.opa_binary, "kafka-libs": settings.kafka_libs}
    if tool not in paths:
        raise AccordError(f"unknown tool {tool!r}: choose one of {', '.join(paths)}")
    typer.echo(str(paths[tool]))


@local.command("up")
def local_up() -> None:
    """Start Kafka and OPA (fetching/building them first if needed); idempotent."""
    stack = local_stack.LocalStack(Settings())
    endpoints = stack.up()
    for line in local_stack.describe(stack.status()):
        typer.echo(line)
    typer.echo("# eval \"$(accord local env)\" to point other tools at them")
    del endpoints


@local.command("status")
def local_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show whether Kafka and OPA run and answer; exit 1 if either does not."""
    states = local_stack.LocalStack(Settings()).status()
    typer.echo(local_stack.as_json(states) if as_json else "\n".join(local_stack.describe(states)))
    if not all(s.running for s in states):
        raise typer.Exit(1)


@local.command("env")
def local_env() -> None:
    """Print ACCORD_* lines for `eval`; exit 1 if the services are not up."""
    endpoints = local_stack.LocalStack(Settings()).endpoints()
    if endpoints is None:
        raise AccordError("the local services are not running: run `accord local up` first")
    for line in endpoints.env_lines():
        typer.echo(line)


@local.command("down")
def local_down(wipe: Annotated[bool, typer.Option(help="also delete Kafka's data")] = False) -> None:
    """Stop the services `accord local up` started (external ones are left alone)."""
    stopped = local_stack.LocalStack(Settings()).down(wipe=wipe)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@registry_cli.command("serve")
def registry_serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8081,
) -> None:
    """Serve the registry; its state lives in a compacted Kafka topic (ACCORD_KAFKA_BOOTSTRAP)."""
    from broker.services.registry_runtime import serve

    settings = Settings()
    bootstrap = settings.kafka_bootstrap or _local_kafka(settings)
    serve(bootstrap, host, port, settings.max_request_bytes)


def _local_kafka(settings: Settings) -> str:
    endpoints = local_stack.LocalStack(settings).endpoints()
    if endpoints is None:
        raise AccordError("no Kafka to store schemas in: set ACCORD_KAFKA_BOOTSTRAP or run `accord local up`")
    return endpoints.kafka_bootstrap


@app.command("demo")
def demo() -> None:
    """Publish and read back one Avro record on Kafka and ask OPA for sharing decisions."""
    from broker.services import demo as demo_job

    stack = local_stack.LocalStack(Settings())
    endpoints = stack.endpoints() or stack.up()
    demo_job.run(endpoints, say=typer.echo)


def main() -> None:
    try:
        app()
    except AccordError as exc:
        typer.echo(f"accord: error: {exc}", err=True)
        sys.exit(1)
