"""Copies of the shipped catalog to break on purpose, and helpers to say where a problem should be reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from broker.catalog import load_and_compile
from broker.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "catalog"
SCHEMAS = REPO / "schemas"


def copy_catalog(tmp_path: Path) -> Path:
    copy = tmp_path / "catalog"
    shutil.copytree(CATALOG, copy)
    return copy


def line_of(path: Path, text: str, nth: int = 0) -> int:
    """The 1-based line of the nth line containing `text` (so expected lines follow the shipped files)."""
    found = [number for number, line in enumerate(path.read_text().splitlines(), start=1) if text in line]
    assert len(found) > nth, f"{text!r} not in {path}"
    return found[nth]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def problems(catalog: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_and_compile(catalog, SCHEMAS)
    return str(caught.value)
