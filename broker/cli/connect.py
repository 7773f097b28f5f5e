"""`accord connect run|status|redeliver CONFIG.yaml`: a subscriber's sinks, which move its delivery topics into its
own systems (PostgreSQL tables, CSV or Parquet files, a signed webhook) as its own Kafka user, storing the position
as they go; and a publisher's sources, which publish its CSV, JSON lines or Parquet files into a stream through the
API."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from connectors.config import WebhookSinkConfig

connect_cli = typer.Typer(help="Sinks: deliveries into a subscriber's own PostgreSQL, files or webhook; sources: a "
                               "publisher's files into a stream; with no code.", no_args_is_help=True)
Config = Annotated[Path, typer.Argument(help="the sink's or source's YAML config (see README, For subscribers and "
                                             "For publishers)")]


@connect_cli.command("run")
def run(config: Config,
        batch: Annotated[int, typer.Option(help="records read (and per transaction or file write) at most")] = 2000,
        metrics_port: Annotated[int | None, typer.Option(
            help="serve Prometheus /metrics on 127.0.0.1 at this port (records stored, rejected, failed; lag)")]
        = None,
        once: Annotated[bool, typer.Option(
            "--once", help="a source: publish what there is now and stop (no watching, no following)")] = False,
        ) -> None:
    """Move the config's deliveries into its database, folder or webhook until interrupted (Ctrl-C or SIGTERM stops
    after the batch in hand is stored; a file sink commits the file in hand; a webhook batch still being retried is
    sent again at the next start); a stopped database or receiver, a full disk or a stopped Kafka is waited for,
    and nothing is lost. A source (`source:` in the config) publishes its files until none is left (a watched
    folder: until interrupted), with a progress bar on a terminal and a summary at the end."""
    from broker.runtime import connect
    from connectors.config import FileSinkConfig, WebhookSinkConfig, is_source, load

    stopping = threading.Event()
    if is_source(config):
        _run_source(config, stopping, once)
        return
    checked = load(config)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()
    def pause(seconds: float) -> None:
        # In slices, not Event.wait: the signal handler sets the event, and Event.wait holds the lock set() takes.
        end = time.monotonic() + seconds
        while not stopping.is_set() and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    target = (checked.webhook.url if isinstance(checked, WebhookSinkConfig) else str(checked.files.directory)
              if isinstance(checked, FileSinkConfig) else checked.postgres.dsn)
    typer.echo(f"sink {checked.sink}: {', '.join(checked.topics())} -> {target}", err=True)
    metrics = None
    if metrics_port is not None:
        from broker.adapters.metrics import PrometheusSinkMetrics, serve_metrics

        server = serve_metrics(metrics_port)
        metrics = PrometheusSinkMetrics(checked.sink)
        typer.echo(f"metrics: http://127.0.0.1:{server.server_port}/metrics", err=True)
    connect.run(checked, stopping.is_set, batch, metrics, wait=pause)


def _run_source(path: Path, stopping: threading.Event, once: bool = False) -> None:
    """A source: publish until it has nothing more (a watched directory: until interrupted), then the summary."""
    import sys

    from broker.runtime import sources
    from connectors.config import load_source

    checked = load_source(path)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    def pause(seconds: float) -> None:
        end = time.monotonic() + seconds
        while not stopping.is_set() and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))

    def retrying(exc: Exception) -> None:
        typer.echo(f"source: {exc}; sending the batch again", err=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    typer.echo(f"source {checked.source} {checked.name} -> stream {checked.stream}", err=True)
    summary = sources.run(checked, stopping.is_set, sources.progress_for(sys.stderr), pause, retrying, once)
    typer.echo(f"summary: {summary.line()}", err=True)
    if summary.run.kept_out:
        typer.echo(f"quarantined rows, each with its file, line and reason: {checked.state_dir / 'rejects.jsonl'} "
                   f"(`accord connect status {path}` shows the newest)", err=True)


def _source_status(path: Path) -> None:
    from broker.runtime import sources
    from connectors.config import load_source

    checked = load_source(path)
    position, totals, rejects = sources.status(checked)
    typer.echo(f"source {checked.name} -> stream {checked.stream}")
    if position is None:
        typer.echo("nothing published yet")
    else:
        done = position.get("done")
        if isinstance(done, dict):
            typer.echo(f"files published: {len(done)}")
        if position.get("file"):
            typer.echo(f"in hand: {position['file']}, {position.get('row', 0)} rows published "
                       f"(to line {position.get('line', 0)})")
        if isinstance(position.get("key"), list):  # PostgreSQL: the last row's watermark and tie-breakers
            typer.echo("read up to (" + ", ".join(str(next(iter(v.values()))) for v in position["key"]) + ")")
        if "watermark" in position:  # HTTP
            poll = "" if position.get("page") is None else f"; a poll in hand at {position['page']}"
            typer.echo(f"watermark: {position['watermark']}{poll}")
    typer.echo(f"rows read {totals.rows}, accepted {totals.accepted}, quarantined {totals.kept_out} "
               f"({totals.rejected} by the source, {totals.quarantined} by the API)")
    for reject in rejects:
        typer.echo(f"{reject.get('where')}: {reject.get('reason')}")


@connect_cli.command("status")
def status(config: Config) -> None:
    """Each delivery topic's partitions: the position stored with the data (a file sink's: after its last
    committed file), the end of the topic, the lag; and the records kept aside as rejected (a row the table cannot
    key), or a webhook's dead-lettered batches. For a source: what it has published, its totals and its newest
    quarantined rows with where each came from and why."""
    from broker.runtime import connect
    from connectors.config import WebhookSinkConfig, is_source, load

    if is_source(config):
        _source_status(config)
        return
    checked = load(config)
    if isinstance(checked, WebhookSinkConfig):
        _webhook_status(config, checked)
        return
    rows, rejected = connect.status(checked)
    typer.echo(f"{'topic':<64} {'part':>4} {'stored':>10} {'end':>10} {'lag':>8}")
    for row in rows:
        typer.echo(f"{row.topic:<64} {row.partition:>4} {row.stored:>10} {row.end:>10} {row.lag:>8}")
    for topic, count in rejected.items():
        if count:
            typer.echo(f"rejected: {count} record(s) of {topic}, kept with the reason in accord_rejected")


def _webhook_status(path: Path, config: WebhookSinkConfig) -> None:
    from broker.runtime import connect

    rows, _ = connect.status(config)
    letters = connect.dead_letters(config)
    typer.echo(f"{'topic':<64} {'part':>4} {'stored':>10} {'end':>10} {'lag':>8} {'dead':>5}")
    for row in rows:
        dead = sum(1 for d in letters if (d.topic, d.partition) == (row.topic, row.partition))
        typer.echo(f"{row.topic:<64} {row.partition:>4} {row.stored:>10} {row.end:>10} {row.lag:>8} {dead:>5}")
    for letter in letters:
        typer.echo(f"dead letter {letter.id}: {letter.records} record(s), {len(letter.attempts)} attempt(s), "
                   f"{letter.reason}")
    if letters:
        typer.echo(f"{len(letters)} batch(es) in the dead letter: `accord connect redeliver {path} --all` (or --id "
                   "ID) sends them again")


@connect_cli.command("redeliver")
def redeliver(config: Config,
              ids: Annotated[list[str] | None, typer.Option("--id", help="a dead letter's delivery id (repeatable)")]
              = None,
              every: Annotated[bool, typer.Option("--all", help="every dead-lettered batch")] = False) -> None:
    """POST a webhook sink's dead-lettered batches again, oldest first, once each: an accepted batch leaves the
    dead letter, a refused one stays with the new attempt and reason (exit status 1). Kafka is not needed."""
    from broker.errors import ConfigError
    from broker.runtime import connect
    from connectors.config import WebhookSinkConfig, load

    checked = load(config)
    if not isinstance(checked, WebhookSinkConfig):
        raise ConfigError(f"{config} configures a {checked.sink} sink; only a webhook sink has a dead letter")
    if bool(ids) == every:
        raise typer.BadParameter("name the batches with --id ID (repeatable) or send them all with --all")
    done = connect.redeliver(checked, None if every else ids)
    for outcome in done:
        letter = outcome.letter
        verdict = "delivered" if outcome.accepted else f"still refused: {outcome.error}"
        typer.echo(f"{letter.id} ({letter.records} record(s)): {verdict}")
    if not done:
        typer.echo("the dead letter is empty")
    if any(not o.accepted for o in done):
        raise typer.Exit(1)
