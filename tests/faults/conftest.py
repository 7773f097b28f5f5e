"""The fault suite's session: one whole local stack as `accord local up` runs it, under its supervisor, in a
temporary state directory, with a catalog whose escalation ladder runs in seconds; and the figures each test
measures, printed as JSON lines as they are taken and again at the end of the run."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.faults.support import FaultStack, start_fault_stack

_FIGURES: list[dict[str, Any]] = []


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with pytest.MonkeyPatch.context() as patch:
        running = start_fault_stack(tmp_path_factory.mktemp("faults"), patch)
        try:
            yield running
        finally:
            running.down()


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Print one measured figure of this test (a JSON line on stdout) and keep it for the run's summary."""
    def record(**values: Any) -> None:
        entry = {"test": request.node.name, **values}
        _FIGURES.append(entry)
        print(json.dumps(entry))
    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("fault figures")
        for entry in _FIGURES:
            terminalreporter.write_line(json.dumps(entry))
