"""`accord connect run|status CONFIG.yaml`: a subscriber's sinks, which move its delivery topics into its own
systems (PostgreSQL tables, CSV or Parquet files) as its own Kafka user, storing the position with the data."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

connect_cli = typer.Typer(help="Sinks: deliveries into a subscriber's own PostgreSQL or files, with no code.",
                          no_args_is_help=True)
Config = Annotated[Path, typer.Argument(help="the sink's YAML config (see README, For subscribers)")]


@connect_cli.command("run")
def run(config: Config,
        batch: Annotated[int, typer.Option(help="records per transaction (or file write) at most")] = 2000) -> None:
    """Move the config's deliveries into its database or folder until interrupted (Ctrl-C or SIGTERM stops after
    the batch in hand is stored; a file sink commits the file in hand); a stopped database, a full disk or a
    stopped Kafka is waited for, and nothing is lost or stored twice."""
    from broker.runtime import connect
    from connectors.config import SinkConfig, load

    checked = load(config)
    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    target = checked.postgres.dsn if isinstance(checked, SinkConfig) else str(checked.files.directory)
    typer.echo(f"sink {checked.sink}: {', '.join(checked.topics())} -> {target}", err=True)
    connect.run(checked, stopping.is_set, batch)


@connect_cli.command("status")
def status(config: Config) -> None:
    """Each delivery topic's partitions: the position stored with the data (a file sink's: after its last
    committed file), the end of the topic, the lag; and the records kept aside as rejected (a row the table cannot
    key), if any."""
    from broker.runtime import connect
    from connectors.config import load

    rows, rejected = connect.status(load(config))
    typer.echo(f"{'topic':<64} {'part':>4} {'stored':>10} {'end':>10} {'lag':>8}")
    for row in rows:
        typer.echo(f"{row.topic:<64} {row.partition:>4} {row.stored:>10} {row.end:>10} {row.lag:>8}")
    for topic, count in rejected.items():
        if count:
            typer.echo(f"{topic}: {count} record(s) rejected (kept with the reason in accord_rejected)")
