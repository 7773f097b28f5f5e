"""`accord kafka provision|rotate|acls`: the Kafka users and ACLs Accord keeps for its bodies and services.

These act as the Kafka admin: the local stack's (`accord local up` makes it and keeps its password in the secrets
dir), or, for a cluster someone else runs, whichever super user ACCORD_KAFKA_USERNAME names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from broker.cli.context import current_settings

kafka_cli = typer.Typer(help="Kafka users (SASL/SCRAM) and ACLs for bodies, their roles and Accord's services.",
                        no_args_is_help=True)
CatalogDir = Annotated[Path | None, typer.Option("--catalog", help="catalog directory whose bodies get users")]


@kafka_cli.command("provision")
def provision(catalog: CatalogDir = None) -> None:
    """Create a SCRAM user (password made, 0600 in the secrets dir) for every Accord service, every publishing body
    (`<body>`) and every role of a body (`<body>.<role>`), make the ACLs exactly what broker/domain/kafka_acls.py
    says, and retire the users Accord made that the catalog no longer calls for. Safe to repeat."""
    from broker.cli.policy import compile_catalog_dir, running_endpoints
    from broker.security import kafka_identities

    document = compile_catalog_dir(catalog)
    done = kafka_identities.provision(running_endpoints().kafka, current_settings().secrets_dir, document)
    typer.echo(done.describe())


@kafka_cli.command("rotate")
def rotate(user: Annotated[str, typer.Argument(
        help="a publisher (<body>), a role's login (<body>.<role>), or accord.gate / accord.api / ...")]) -> None:
    """Give USER a new password: on the cluster first, then in its file. Connected clients stay connected; the next
    connection needs the new password (a service started by `accord local` reads it when it restarts)."""
    from broker.cli.policy import running_endpoints
    from broker.security import kafka_identities

    path = kafka_identities.rotate(running_endpoints().kafka, current_settings().secrets_dir, user)
    typer.echo(f"rotated {user}'s Kafka password; the new one is in {path} (mode 0600)")


@kafka_cli.command("acls")
def acls(user: Annotated[str | None, typer.Option(help="only this user's")] = None) -> None:
    """List the ACLs on the cluster, one per line."""
    from broker.adapters.kafka_security import KafkaSecurity
    from broker.cli.policy import running_endpoints

    with KafkaSecurity(running_endpoints().kafka) as security:
        found = sorted(security.acls(), key=repr)
    for acl in found:
        if user is None or acl.principal == f"User:{user}":
            pattern = acl.resource_pattern
            typer.echo(f"{acl.principal} {acl.permission_type.name} {acl.operation.name} "
                       f"{pattern.resource_type.name} {pattern.resource_name} ({pattern.pattern_type.name})")
