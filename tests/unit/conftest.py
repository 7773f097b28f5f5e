"""Unit-test session fixtures: the one OPA that answers with Accord's real policies is stopped when the session ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.policy_server import stop_policy_server


@pytest.fixture(scope="session", autouse=True)
def _policy_server_stopped_at_the_end() -> Iterator[None]:
    yield
    stop_policy_server()
