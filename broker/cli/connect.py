"""`accord connect run|status CONFIG.yaml`: a subscriber's sinks, which move its delivery topics into its own
systems (PostgreSQL tables today) as its own Kafka user, storing the position with the data."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

connect_cli = typer.Typer(help="Sinks: deliveries into a subscriber's own PostgreSQL, with no code.",
                          no_args_is_help=True)
Config = Annotated[Path, typer.Argument(help="the sink's YAML config (see README, For subscribers)")]


@connect_cli.command("run")
def run(config: Config,
        batch: Annotated[int, typer.Option(help="records per database transaction at most")] = 2000,
        metrics_port: Annotated[int | None, typer.Option(
            help="serve Prometheus /metrics on 127.0.0.1 at this port (records stored, rejected, failed; lag)")]
        = None) -> None:
    """Move the config's deliveries into its database until interrupted (Ctrl-C or SIGTERM stops after the batch in
    hand is stored); a stopped database or Kafka is waited for, and nothing is lost or stored twice."""
    from broker.runtime import connect
    from connectors.config import load

    checked = load(config)
    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    typer.echo(f"sink {checked.sink}: {', '.join(checked.topics())} -> {checked.postgres.dsn}", err=True)
    metrics = None
    if metrics_port is not None:
        from broker.adapters.metrics import PrometheusSinkMetrics, serve_metrics

        server = serve_metrics(metrics_port)
        metrics = PrometheusSinkMetrics(checked.sink)
        typer.echo(f"metrics: http://127.0.0.1:{server.server_port}/metrics", err=True)
    connect.run(checked, stopping.is_set, batch, metrics)


@connect_cli.command("status")
def status(config: Config) -> None:
    """Each delivery topic's partitions: the position stored with the data, the end of the topic, the lag; and
    the records kept aside as rejected (a row the table cannot key), if any."""
    from broker.runtime import connect
    from connectors.config import load

    rows, rejected = connect.status(load(config))
    typer.echo(f"{'topic':<64} {'part':>4} {'stored':>10} {'end':>10} {'lag':>8}")
    for row in rows:
        typer.echo(f"{row.topic:<64} {row.partition:>4} {row.stored:>10} {row.end:>10} {row.lag:>8}")
    for topic, count in rejected.items():
        if count:
            typer.echo(f"{topic}: {count} record(s) rejected (kept with the reason in accord_rejected)")
