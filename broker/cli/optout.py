"""`accord optout load|status`: the National Data Opt-out list, kept on Kafka as keyed hashes only (see
broker/domain/optout.py for which agreements it applies to)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from broker.cli.context import current_settings
from broker.errors import AccordError

if TYPE_CHECKING:
    from broker.adapters.kafka_optout import KafkaOptOutLog

optout_cli = typer.Typer(help="The National Data Opt-out list (NHS numbers, kept only as keyed hashes).",
                         no_args_is_help=True)


def _log() -> KafkaOptOutLog:
    from broker.adapters.kafka_optout import KafkaOptOutLog
    from broker.cli.policy import running_endpoints
    from broker.domain.kafka_acls import SERVICE_USERS
    from broker.security.kafka_identities import kafka_access, local_access

    settings = current_settings()
    if settings.kafka_bootstrap:    # an external Kafka: act as the user the environment names (the opt-out writer)
        return KafkaOptOutLog(kafka_access(settings, settings.kafka_bootstrap))
    bootstrap = running_endpoints().kafka.bootstrap
    return KafkaOptOutLog(local_access(settings.secrets_dir, bootstrap, SERVICE_USERS["optout"]))


@optout_cli.command("load")
def load(path: Annotated[Path, typer.Argument(help="the opted-out NHS numbers, one a line ('#' comments allowed)")]
         ) -> None:
    """Replace the list in force with the numbers in PATH (those no longer listed are taken off). Each number is
    checked (10 digits, modulus 11) and hashed with the deployment's opt-out key; only the hashes leave this process."""
    from broker.security.secrets import optout_secret
    from broker.services.optout import read_list, replace_list

    try:
        digests = read_list(path, optout_secret(current_settings().secrets_dir))
        loaded = replace_list(_log(), digests)
    except AccordError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"opt-out list: {loaded.listed} patients opted out ({loaded.added} added, {loaded.removed} removed)")


@optout_cli.command("status")
def status() -> None:
    """How many patients the list in force holds."""
    try:
        count = len(_log().current())
    except AccordError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"opt-out list: {count} patients opted out")
