"""Marks every test under tests/integration and tests/e2e as needing the real services."""

from __future__ import annotations

from pathlib import Path

import pytest

_REAL = {"integration", "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _REAL & set(Path(str(item.path)).parts):
            item.add_marker(pytest.mark.integration)
