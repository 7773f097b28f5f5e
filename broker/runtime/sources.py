"""A source's composition root: the files (or other) source, the HTTP publisher and the state directory wired
from its YAML config, run with `run_source`; a progress bar on a terminal and a summary line at the end."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from broker.adapters.json_api_http import HttpJsonApi
from broker.adapters.postgres import PostgresDatabase
from broker.adapters.publisher_http import HttpPublisher
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.domain.topics import ingest_topic, value_subject
from broker.errors import ConfigError
from connectors.sources.base import (
    Position,
    Progress,
    Publisher,
    Source,
    SourceBatch,
    SourceState,
    Summary,
    Totals,
    run_source,
)
from connectors.sources.coercion import Mapper, mapper
from connectors.sources.config import FileSourceConfig, HttpAuth, HttpSourceConfig, PostgresSourceConfig, _Source
from connectors.sources.files import FileSource
from connectors.sources.http import HttpRequestPlan, HttpSource, Paging, Watermark
from connectors.sources.pacing import Backoff, PoliteClient, RateLimit
from connectors.sources.polling import Polled
from connectors.sources.postgres import Keyset, PostgresSource, relation
from connectors.sources.replay import Replayed

SourceOpener = Callable[[Any, Mapper, Callable[[], bool], Callable[[float], object]], Source]


def _read(path: Any, what: str) -> str:
    try:
        return str(path.read_text(encoding="utf-8")).strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc}") from exc


def stream_schema(config: _Source) -> dict[str, Any]:
    """The stream's Avro schema: the config's `schema_file`, or the latest of the stream's ingest subject."""
    if config.schema_file is not None:
        try:
            schema = json.loads(config.schema_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the schema file {config.schema_file}: {exc}") from exc
    else:
        assert config.registry is not None
        token = _read(config.registry.token_file, "registry token")
        with contextlib.closing(HttpSchemaRegistry(config.registry.url, token=lambda: token)) as registry:
            schema = json.loads(registry.latest(value_subject(ingest_topic(config.stream))).schema)
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise ConfigError(f"the schema of {config.stream} is not an Avro record schema")
    return schema


def _files(config: FileSourceConfig, fields: Mapper, stop: Callable[[], bool],
           wait: Callable[[float], object]) -> Source:
    f = config.files
    return FileSource(f.path, fields, format=f.format, pattern=f.pattern, watch=f.watch, poll_s=f.poll_s,
                      settle_s=f.settle_s, delimiter=f.delimiter, encoding=f.encoding, max_rows=config.batch.rows,
                      max_bytes=config.batch.max_bytes, stop=stop, wait=wait, on_warning=_warn)


def _warn(message: str) -> None:
    print(f"source: {message}", file=sys.stderr, flush=True)


class Closing:
    """A source with the clients it reads through, closed after the run."""

    def __init__(self, source: Source, closers: list[Callable[[], None]]) -> None:
        self.source, self.closers = source, closers

    def batches(self, after: Position | None) -> Iterator[SourceBatch]:
        return self.source.batches(after)

    def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                close()


def _report(exc: Exception) -> None:
    _warn(f"{exc}; reading again from the last batch")


def _auth(auth: HttpAuth | None) -> Callable[[], dict[str, str]]:
    if auth is None:
        return dict

    def headers() -> dict[str, str]:
        if auth.token_file is not None:
            token = _read(auth.token_file, "HTTP source token")
        else:
            token = os.environ.get(str(auth.token_env), "").strip()
            if not token:
                raise ConfigError(f"the environment variable {auth.token_env} (the HTTP source's token) is not set")
        return {auth.header: f"{auth.scheme} {token}" if auth.scheme else token}
    return headers


def _http(config: HttpSourceConfig, fields: Mapper, stop: Callable[[], bool],
          wait: Callable[[float], object]) -> Source:
    h = config.http
    api = HttpJsonApi(h.timeout_s)
    client = PoliteClient(api, RateLimit(h.requests_per_s, sleep=wait),
                          Backoff(h.retry.max_attempts, h.retry.first_backoff_s, h.retry.max_backoff_s),
                          sleep=wait, stop=stop, on_warning=_warn)
    paging = Paging(h.paging.rows, h.paging.next, h.paging.page_param, h.paging.first_page, h.paging.last)
    mark = Watermark(h.watermark.field, h.watermark.param, h.watermark.format, tuple(h.watermark.key))
    source = HttpSource(client, HttpRequestPlan(h.url, tuple(h.params.items()), h.headers), paging, mark, fields,
                        config.batch.rows, config.batch.max_bytes, _auth(h.auth))
    polled = Polled(source, h.follow, h.poll_s, stop, wait, _report)
    return Closing(Replayed(polled, config.state_dir, config.batch.in_flight), [api.close])


def _postgres(config: PostgresSourceConfig, fields: Mapper, stop: Callable[[], bool],
              wait: Callable[[float], object]) -> Source:
    p = config.postgres
    password = None if p.password_file is None else _read(p.password_file, "PostgreSQL password")
    database = PostgresDatabase(p.dsn, password, application_name=f"accord-source-{config.name}"[:63])
    source = PostgresSource(database, relation(p.table, p.query), Keyset(p.watermark, tuple(p.tiebreak)), fields,
                            config.batch.rows, p.safety_lag_s, p.table or "query")
    polled = Polled(source, p.follow, p.poll_s, stop, wait, _report)
    return Closing(Replayed(polled, config.state_dir, config.batch.in_flight), [database.close])


def drained(config: _Source) -> _Source:
    """`config` reading what there is and stopping (`--once`): no watched directory, no following."""
    for section, flag in (("files", "watch"), ("http", "follow"), ("postgres", "follow")):
        part = getattr(config, section, None)
        if part is not None:
            return config.model_copy(update={section: part.model_copy(update={flag: False})})
    return config


# Each source kind's opener; another kind adds itself here.
OPENERS: dict[type[Any], SourceOpener] = {FileSourceConfig: _files, HttpSourceConfig: _http,
                                          PostgresSourceConfig: _postgres}


def open_source(config: _Source, stop: Callable[[], bool], wait: Callable[[float], object]) -> Source:
    opener = OPENERS.get(type(config))
    if opener is None:
        raise ConfigError(f"no source of kind {type(config).__name__}")
    return opener(config, mapper(stream_schema(config), config.columns), stop, wait)


@contextlib.contextmanager
def publisher(config: _Source) -> Iterator[Publisher]:
    token_file = config.api.token_file
    with HttpPublisher(config.api.url, lambda: _read(token_file, "API token"), config.api.timeout_s) as client:
        yield client


class TerminalProgress:
    """A bar on stderr when it is a terminal (rich's), showing the file in hand, its share read and the rows."""

    def __init__(self, out: IO[str] | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                             TextColumn("{task.fields[rows]}"), TimeElapsedColumn(),
                             console=Console(file=out or sys.stderr), transient=False)
        self._task: Any = None
        self._label = ""
        self._bar.start()

    def update(self, batch: SourceBatch, totals: Totals) -> None:
        rows = f"{totals.rows} rows, {totals.accepted} accepted, {totals.kept_out} quarantined"
        if self._task is None or batch.label != self._label:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._label = batch.label
            self._task = self._bar.add_task(batch.label or "source", total=batch.total, rows=rows)
        self._bar.update(self._task, completed=batch.done or 0, total=batch.total, rows=rows)

    def close(self) -> None:
        self._bar.stop()


def progress_for(out: IO[str]) -> Progress | None:
    return TerminalProgress(out) if out.isatty() else None


def run(config: _Source, stop: Callable[[], bool] = lambda: False, progress: Progress | None = None,
        wait: Callable[[float], object] = time.sleep,
        on_error: Callable[[Exception], None] = lambda exc: None, once: bool = False) -> Summary:
    """Publish the config's source until it has nothing more (a watched directory, a followed API or table: until
    `stop()`; with `once`, not even then)."""
    state = SourceState(config.state_dir)
    with state.lock(), publisher(config) as client:
        source = open_source(drained(config) if once else config, stop, wait)
        try:
            return run_source(config.name, config.stream, source, client, state, stop=stop, progress=progress,
                              wait=wait, on_error=on_error, in_flight=config.batch.in_flight)
        finally:
            if isinstance(source, Closing):
                source.close()


def status(config: _Source, rejects: int = 20) -> tuple[dict[str, Any] | None, Totals, list[dict[str, Any]]]:
    """The stored position, the totals since the state directory was made and the newest `rejects`."""
    state = SourceState(config.state_dir)
    stored = state.load(config.name, config.stream)
    return (None if stored.position is None else dict(stored.position), stored.totals,
            state.rejects(rejects, stored.rejects_bytes))
