"""How a polled source (HTTP, PostgreSQL) runs: once to the end of what there is (`--once`, or `follow: false`),
or following: polled again every `poll_s` until stopped. A database or API that fails (ServiceError) is read
again from the end of the last batch handed out, after a pause, instead of ending the run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from broker.errors import ServiceError
from connectors.sources.base import Position, Source, SourceBatch

MAX_PAUSE_S = 60.0


class Polled:
    def __init__(self, source: Source, follow: bool, poll_s: float, stop: Callable[[], bool] = lambda: False,
                 wait: Callable[[float], object] = time.sleep,
                 on_error: Callable[[Exception], None] = lambda exc: None) -> None:
        self.source, self.follow, self.poll_s = source, follow, poll_s
        self._stop, self._wait, self._on_error = stop, wait, on_error

    def batches(self, after: Position | None) -> Iterator[SourceBatch]:
        pause = 1.0
        while not self._stop():
            try:
                for batch in self.source.batches(after):
                    yield batch
                    after = batch.end
                    pause = 1.0
            except ServiceError as exc:
                self._on_error(exc)
                self._wait(pause)
                pause = min(pause * 2, MAX_PAUSE_S)
                continue
            if not self.follow:
                return
            if after is not None:
                yield SourceBatch([], [], [], after, after, 0)  # idle: the runner stores what is in flight first
            self._wait(self.poll_s)
