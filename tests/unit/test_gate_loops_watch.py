"""`accord gate serve` ends its process once a worker's loop has stopped on an error, so that a supervisor starts
it again, and never while every loop runs."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, cast

from broker.errors import WriterFenced
from broker.runtime.gate import GateThread, exit_when_a_loop_stops


@dataclass
class _Runner:
    worker: str
    failure: BaseException | None = None


def test_the_process_ends_once_a_loop_has_stopped_and_not_before() -> None:
    runners = [_Runner("accord-gate-0"), _Runner("accord-gate-1")]
    ended = threading.Event()
    watch = threading.Thread(target=exit_when_a_loop_stops,
                             args=(cast(Any, runners), ended.set), kwargs={"every_s": 0.01}, daemon=True)
    watch.start()
    assert not ended.wait(0.2), "ended while every loop ran"
    runners[1].failure = WriterFenced("another worker took over the transactional id 'accord-gate-1'")
    assert ended.wait(5.0)
    watch.join(5.0)
    assert not watch.is_alive()


def test_a_runner_is_what_the_watch_reads() -> None:
    assert "failure" in GateThread.__dataclass_fields__ and "worker" in GateThread.__dataclass_fields__
