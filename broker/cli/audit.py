"""`accord audit export|verify`: the signed audit trail as JSON lines, and checking it offline against a public key.

`verify` prints how many entries and checkpoints it read, then `ok` or the first problem, and exits 1 on a problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from broker.cli.context import current_settings
from broker.domain.audit import Entry, from_json_line, key_id, verify
from broker.domain.topics import CHAIN_TOPIC
from broker.errors import AuditError

audit_cli = typer.Typer(help="The tamper-evident audit trail: export it, verify it offline.", no_args_is_help=True)

ChainTopic = Annotated[str, typer.Option("--topic", help="the chain topic")]


def _chain_lines(topic: str) -> Iterator[str]:
    from broker.adapters.kafka_audit import read_chain
    from broker.cli.policy import running_endpoints
    from broker.security.kafka_identities import kafka_access

    settings = current_settings()
    # Only Kafka is needed: a Kafka named by ACCORD_KAFKA_BOOTSTRAP will do without the other services.
    kafka = kafka_access(settings, settings.kafka_bootstrap) if settings.kafka_bootstrap else running_endpoints().kafka
    return read_chain(kafka, topic)


@audit_cli.command("export")
def export(
    out: Annotated[Path | None, typer.Option("--out", help="write here instead of standard output")] = None,
    topic: ChainTopic = CHAIN_TOPIC,
) -> None:
    """Write the chain topic's entries as JSON lines, oldest first."""
    if out is None:
        for line in _chain_lines(topic):
            typer.echo(line)
        return
    count = 0
    with out.open("w", encoding="utf-8") as file:
        for line in _chain_lines(topic):
            file.write(line + "\n")
            count += 1
    typer.echo(f"{count} entries written to {out}", err=True)


@audit_cli.command("verify")
def verify_trail(
    file: Annotated[Path | None, typer.Argument(help="an exported trail (default: read the chain topic)")] = None,
    key: Annotated[Path | None, typer.Option(help="the audit public key PEM (default: the secrets directory's "
                                                  "audit-signing.pub)")] = None,
    require_signed_tail: Annotated[bool, typer.Option(help="fail if entries follow the last checkpoint (a trail "
                                                           "exported after a clean stop ends signed)")] = False,
    topic: ChainTopic = CHAIN_TOPIC,
) -> None:
    """Check every hash, link and checkpoint signature; name the first entry that is wrong."""
    from broker.security.audit_keys import load_public_key, public_key_path

    public = load_public_key(key or public_key_path(current_settings().secrets_dir))
    try:
        entries = list(_parse(_file_lines(file) if file is not None else _chain_lines(topic)))
    except AuditError as exc:
        typer.echo(f"problem: {exc}")
        raise typer.Exit(1) from None
    report = verify(entries, {key_id(public): public}, require_checkpoint_tail=require_signed_tail)
    typer.echo(f"{report.entries} entries, {report.checkpoints} checkpoints, "
               f"{report.unsigned_tail} after the last checkpoint")
    if report.first_problem is None:
        typer.echo("ok")
        return
    problem = report.first_problem
    typer.echo(f"problem at entry {problem.seq} ({problem.kind}): {problem.message}")
    raise typer.Exit(1)


def _file_lines(path: Path) -> Iterator[str]:
    # Iterating (not splitlines) splits only at newlines; U+2028 may appear unescaped inside strings.
    with path.open(encoding="utf-8") as file:
        yield from (line.rstrip("\n") for line in file)


def _parse(lines: Iterable[str]) -> Iterator[Entry]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield from_json_line(line, number)
