"""`accord backfill status`: how far each grant's history has been replayed to its subscriber."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from broker.cli.audit import cli_kafka
from broker.domain.backfill import Replay, bar

backfill_cli = typer.Typer(help="History on a new grant: replays of the past to a newly granted subscriber.",
                           no_args_is_help=True)


@backfill_cli.command("status")
def status(follow: Annotated[bool, typer.Option(
        "--follow", help="redraw every 2 s until every replay is done")] = False) -> None:
    """Per grant and delivery topic: ingest records replayed of those to replay, a progress bar, and the records
    delivered (those of the subscriber's rows, under its plan today)."""
    from broker.runtime.backfill import replays

    kafka = cli_kafka()
    while True:
        found = replays(kafka)
        if not found:
            typer.echo("no grant has asked for history (backfill:)")
            return
        for replay in found:
            typer.echo(line(replay))
        if not follow or all(replay.finished for replay in found):
            return
        time.sleep(2)
        typer.echo("")


def line(replay: Replay) -> str:
    done, total = replay.counts()
    state = "done" if replay.finished else "replaying" if done else "waiting"
    return (f"{replay.grant} ({replay.backfill}) -> {replay.topic}\n  {bar(done, total)} {done}/{total} records "
            f"read, {replay.delivered} delivered, {state}")
