"""`accord kafka provision|rotate|acls|partitions`: the Kafka users and ACLs Accord keeps for its bodies and
services, and the partition counts of the streams' topics.

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


@kafka_cli.command("partitions")
def partitions(
    catalog: Annotated[Path | None, typer.Option("--catalog", help="catalog directory whose streams.yaml "
                                                 "gives the counts (default: ACCORD_CATALOG_DIR)")] = None,
    grow: Annotated[bool, typer.Option("--grow", help="add partitions to the topics that have fewer than the "
                                       "catalog asks for")] = False,
) -> None:
    """Compare each stream's ingest topic and its existing delivery topics with the partitions streams.yaml asks
    for. Topics get their count when made; growing one later sends a key to another partition, so records of one
    area published before and after may be read out of order: that is why only --grow grows, and nothing shrinks."""
    from broker.adapters.kafka_admin import grow_partitions, topic_partitions
    from broker.catalog.loader import load_stream_partitions
    from broker.cli.policy import running_endpoints
    from broker.domain.partitions import growth, resizes, wanted_counts

    kafka = running_endpoints().kafka
    directory = catalog or current_settings().catalog_dir
    current = topic_partitions(kafka)
    found = resizes(current, wanted_counts(load_stream_partitions(directory), current))
    if not found:
        typer.echo(f"every stream topic has the partitions {directory / 'streams.yaml'} asks for")
        return
    for resize in found:
        typer.echo(resize.describe())
    if grow and (more := growth(found)):
        grow_partitions(kafka, more)
        typer.echo(f"grew {len(more)} topic{'s' * (len(more) != 1)}: " + ", ".join(
            f"{topic} to {count}" for topic, count in sorted(more.items())))
    elif growth(found):
        typer.echo("nothing grown: add --grow to grow them")
