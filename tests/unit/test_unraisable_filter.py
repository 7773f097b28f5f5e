"""The suite excuses kafka-python's own leaked socket (a ResourceWarning raised while its selector closes a cancelled
task) and nothing else."""

from __future__ import annotations

import sys
from types import TracebackType

from tests.conftest import _in_kafka_pythons_task_close


def _trace_through(filename: str, function: str) -> TracebackType:
    namespace: dict[str, object] = {}
    exec(compile(f"def {function}():\n    raise ResourceWarning('unclosed <socket.socket>')\n", filename, "exec"),
         namespace)
    try:
        namespace[function]()  # type: ignore[operator]
    except ResourceWarning:
        trace = sys.exc_info()[2]
        assert trace is not None
        return trace
    raise AssertionError("did not raise")


def test_only_kafka_pythons_task_close_is_excused() -> None:
    assert _in_kafka_pythons_task_close(_trace_through("/site-packages/kafka/net/selector.py", "close"))
    assert not _in_kafka_pythons_task_close(_trace_through("/site-packages/kafka/net/selector.py", "poll"))
    assert not _in_kafka_pythons_task_close(_trace_through("/repo/broker/adapters/selector.py", "close"))
    assert not _in_kafka_pythons_task_close(None)
