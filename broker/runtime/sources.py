"""A source's composition root: the files (or other) source, the HTTP publisher and the state directory wired
from its YAML config, run with `run_source`; a progress bar on a terminal and a summary line at the end."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from broker.adapters.publisher_http import HttpPublisher
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.domain.topics import ingest_topic, value_subject
from broker.errors import ConfigError
from connectors.sources.base import Progress, Publisher, Source, SourceBatch, SourceState, Summary, Totals, run_source
from connectors.sources.coercion import Mapper, mapper
from connectors.sources.config import FileSourceConfig, _Source
from connectors.sources.files import FileSource

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
                      max_bytes=config.batch.max_bytes, stop=stop, wait=wait)


# Each source kind's opener; another kind adds itself here.
OPENERS: dict[type[Any], SourceOpener] = {FileSourceConfig: _files}


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
                self._bar.update(self._task, completed=self._bar.tasks[0].total or 0)
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
        on_error: Callable[[Exception], None] = lambda exc: None) -> Summary:
    """Publish the config's source until it has nothing more (a watched directory: until `stop()`)."""
    state = SourceState(config.state_dir)
    with state.lock(), publisher(config) as client:
        source = open_source(config, stop, wait)
        return run_source(config.name, config.stream, source, client, state, stop=stop, progress=progress,
                          wait=wait, on_error=on_error)


def status(config: _Source, rejects: int = 20) -> tuple[dict[str, Any] | None, Totals, list[dict[str, Any]]]:
    """The stored position, the totals since the state directory was made and the newest `rejects`."""
    state = SourceState(config.state_dir)
    stored = state.load(config.name, config.stream)
    return (None if stored.position is None else dict(stored.position), stored.totals,
            state.rejects(rejects, stored.rejects_bytes))
