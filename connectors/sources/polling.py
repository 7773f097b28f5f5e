"""How a polled source (HTTP, PostgreSQL) runs: once to the end of what there is (`--once`, or `follow: false`),
or following: polled again every `poll_s` until stopped. A database or API that fails (ServiceError) is read
again from the end of the last batch handed out, after a pause, instead of ending the run: while following, for as
long as it takes; once, for `max_rounds` rounds in a row, then the run ends with the error."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from broker.errors import ServiceError
from connectors.sources.base import Position, Source, SourceBatch

MAX_PAUSE_S = 60.0


class Polled:
    def __init__(self, source: Source, follow: bool, poll_s: float, stop: Callable[[], bool] = lambda: False,
                 wait: Callable[[float], object] = time.sleep,
                 on_error: Callable[[Exception], None] = lambda exc: None, max_rounds: int = 5) -> None:
        self.source, self.follow, self.poll_s, self.max_rounds = source, follow, poll_s, max_rounds
        self._stop, self._wait, self._on_error = stop, wait, on_error

    def batches(self, after: Position | None) -> Iterator[SourceBatch]:
        pause, failed = 1.0, 0
        while not self._stop():
            try:
                for batch in self.source.batches(after):
                    yield batch
                    after = batch.end
                    pause, failed = 1.0, 0
            except ServiceError as exc:
                failed += 1
                if not self.follow and failed >= self.max_rounds:
                    raise
                self._on_error(exc)
                self._wait(pause)
                pause = min(pause * 2, MAX_PAUSE_S)
                continue
            if not self.follow:
                return
            if after is not None:
                yield SourceBatch([], [], [], after, after, 0)  # idle: the runner stores what is in flight first
            self._wait(self.poll_s)
