"""Hostile catalog YAML: whatever a file holds, `accord catalog validate` compiles it or raises CatalogError listing
each problem at its file; never another exception, never code run from a YAML tag."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from broker.catalog import CatalogError, load_and_compile
from tests.unit.catalog_support import CATALOG, SCHEMAS, copy_catalog

# Case counts per test: keep all three fuzz files under ~60 s on a slow 2-core machine (a compile takes ~20 ms).
YAML_DOCUMENT_CASES = 100
MUTATED_FILE_CASES = 150
HOSTILE_TEXT_CASES = 100
RAW_BYTES_CASES = 40

FILES = sorted(str(path.relative_to(CATALOG)) for path in CATALOG.rglob("*.yaml"))
ORIGINALS = {name: (CATALOG / name).read_text(encoding="utf-8") for name in FILES}


def _keys(data: Any) -> Iterator[str]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield str(key)
            yield from _keys(value)
    elif isinstance(data, list):
        for item in data:
            yield from _keys(item)


# Real keys and words make random documents reach the models' validators, not just the first "unknown key".
KEYS = sorted({key for text in ORIGINALS.values() for key in _keys(yaml.safe_load(text))})
WORDS = ["keep", "drop", "mask", "generalise", "age-band", "lsoa", "subscriber-areas", "national", "local", "unitary",
         "county", "ukhsa", "dph", "analyst", "ukhsa.positive-tests", "t1-positive-tests", "E06000016", "E10000018",
         "E99999999", "P5D", "PT0S", "P1M", "PT24H", "publisher", "refusal-stands", "emergency", "2026-01-01",
         "2026-01-01T00:00:00Z", "", " ", "\u202e", "\ufeff", "ß", "\U0001f600", "-", "~", "null"]
TIMEZONES = st.integers(-1439, 1439).map(lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)))
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=10**400)
           | st.floats() | st.text(max_size=20) | st.sampled_from(WORDS) | st.dates()
           | st.datetimes(timezones=st.none() | TIMEZONES))
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8) | st.integers(), inner, max_size=5),
    max_leaves=30,
)
SNIPPETS = [
    "!!python/object/apply:os.getcwd []", "!!python/name:os.system", "!!binary aGVsbG8=", "!!set {a, b}",
    "!!omap [{a: 1}]", "!custom [1]", "&loop [*loop]", "&a [x, x, x]", "*undefined", "<<: 5", "{a: 1, a: 2}",
    "[" * 300 + "]" * 300, "9" * 5000, "2027-13-30", "1e99999", "\x00", "\x07", "\t", "\ufeff", "'unclosed",
    "---\n", "%YAML 9.9", "? [a, b]\n: 1", "\ud7ff\ue000\U0010ffff",
]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_catalog(tmp_path_factory.mktemp("fuzz"))


def _validated_with(catalog: Path, name: str, content: str | bytes) -> None:
    """Put `content` in the catalog's file `name`, validate, then restore the file; the property is checked here."""
    path = catalog / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    try:
        load_and_compile(catalog, SCHEMAS)
    except CatalogError as exc:
        assert exc.problems, exc
        for problem in exc.problems:
            # Each problem names a catalog file (and mostly a line), then says what is wrong.
            assert problem.startswith("catalog/") and ": " in problem, problem
    finally:
        path.write_text(ORIGINALS[name], encoding="utf-8")


def _dumped(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@settings(max_examples=YAML_DOCUMENT_CASES, deadline=None, derandomize=True, database=None)
@given(name=st.sampled_from(FILES), document=DOCUMENTS)
def test_any_yaml_document_is_compiled_or_refused_with_reasons(catalog: Path, name: str, document: Any) -> None:
    _validated_with(catalog, name, _dumped(document))


def _paths(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, value in items:
        yield from _paths(value, (*path, key))


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[str, str]:
    """A real catalog file with 1-3 keys dropped, values swapped for other types, wrapped or copied elsewhere."""
    name = draw(st.sampled_from(FILES))
    data = yaml.safe_load(ORIGINALS[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(data))[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        match draw(st.sampled_from(["drop", "replace", "wrap", "copy", "add"])):
            case "drop":
                del parent[path[-1]]
            case "replace":
                parent[path[-1]] = draw(DOCUMENTS)
            case "wrap":
                parent[path[-1]] = draw(st.sampled_from([[parent[path[-1]]], {"value": parent[path[-1]]}]))
            case "copy":
                parent[path[-1]] = copy.deepcopy(_at(data, draw(st.sampled_from(paths))))
            case _:
                if isinstance(parent, dict):
                    parent[draw(st.sampled_from(KEYS))] = draw(SCALARS)
    return name, _dumped(data)


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


@settings(max_examples=MUTATED_FILE_CASES, deadline=None, derandomize=True, database=None)
@given(mutated=_mutated())
def test_mutated_real_file_is_compiled_or_refused_with_reasons(catalog: Path, mutated: tuple[str, str]) -> None:
    _validated_with(catalog, *mutated)


@st.composite
def _hostile_text(draw: st.DrawFn) -> tuple[str, str]:
    """A real file with a hostile snippet put at the start of a line or after a key, or random text."""
    name = draw(st.sampled_from(FILES))
    lines = ORIGINALS[name].splitlines()
    at = draw(st.integers(0, len(lines)))
    snippet = draw(st.sampled_from(SNIPPETS) | st.text(max_size=30))
    line = lines[at] if at < len(lines) else ""
    if ":" in line and draw(st.booleans()):
        lines[at] = f"{line.partition(':')[0]}: {snippet}"
    else:
        lines.insert(at, snippet)
    return name, "\n".join(lines) + "\n"


@settings(max_examples=HOSTILE_TEXT_CASES, deadline=None, derandomize=True, database=None)
@given(hostile=_hostile_text())
# Found by fuzzing: each of these raised RecursionError or ValueError, or hung, instead of a CatalogError.
@example(hostile=("bodies.yaml", "bodies: &loop\n  - *loop\n"))
@example(hostile=("ladder.yaml", "&loop {ladder: *loop}\n"))
@example(hostile=("bodies.yaml", 'bodies: ["\x00"]\n'))
@example(hostile=("streams.yaml", f"streams: [{'9' * 5000}]\n"))
@example(hostile=("templates/t1-positive-tests.yaml", "tiers: " + "[" * 5000 + "]" * 5000 + "\n"))
@example(hostile=("ladder.yaml", "".join(f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]\n" for n in range(1, 9))
                  .replace("*a0", "x") + "ladder: *a8\n"))
def test_hostile_text_is_refused_with_reasons(catalog: Path, hostile: tuple[str, str]) -> None:
    _validated_with(catalog, *hostile)


@settings(max_examples=RAW_BYTES_CASES, deadline=None, derandomize=True, database=None)
@given(name=st.sampled_from(FILES), content=st.binary(max_size=200))
@example(name="bodies.yaml", content=b"bodies: [\xff\xfe]\n")
def test_raw_bytes_are_refused_with_reasons(catalog: Path, name: str, content: bytes) -> None:
    _validated_with(catalog, name, content)


@pytest.mark.parametrize(("tag", "expected"), [
    ("!!python/object/apply:builtins.open ['{marker}', 'w']", "could not determine a constructor"),
    ("!!python/object/new:builtins.open ['{marker}', 'w']", "could not determine a constructor"),
    ("!!python/name:os.system", "could not determine a constructor"),
])
def test_python_tags_are_refused_and_never_run(catalog: Path, tmp_path: Path, tag: str, expected: str) -> None:
    marker = tmp_path / "created-by-yaml"
    (catalog / "bodies.yaml").write_text(f"bodies: {tag.format(marker=marker)}\n", encoding="utf-8")
    try:
        with pytest.raises(CatalogError) as caught:
            load_and_compile(catalog, SCHEMAS)
    finally:
        (catalog / "bodies.yaml").write_text(ORIGINALS["bodies.yaml"], encoding="utf-8")
    assert f"catalog/bodies.yaml:1: YAML value error: {expected}" in caught.value.problems[0]
    assert not marker.exists()


@pytest.mark.parametrize(("text", "expected"), [
    ("bodies: &loop\n  - *loop\n", "catalog/bodies.yaml:1: an alias (*name) inside its own anchor (&name) makes the "
                                   "document endless; remove it"),
    ('bodies:\n  - ok\n  - "\x00"\n', "catalog/bodies.yaml:3: YAML syntax error: unacceptable character #x0000"),
    (f"bodies: [{'9' * 5000}]\n", "catalog/bodies.yaml:1: YAML value error: a number of 5000 characters is too long"),
    ("bodies: " + "[" * 5000 + "]" * 5000 + "\n", "catalog/bodies.yaml: YAML nested too deeply to read"),
    ("".join(f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]\n" for n in range(1, 9)).replace("*a0", "x")
     + "bodies: *a8\n", "catalog/bodies.yaml:1: its aliases expand to "),
])
def test_hostile_yaml_is_one_problem_with_its_place(catalog: Path, text: str, expected: str) -> None:
    (catalog / "bodies.yaml").write_text(text, encoding="utf-8")
    try:
        with pytest.raises(CatalogError) as caught:
            load_and_compile(catalog, SCHEMAS)
    finally:
        (catalog / "bodies.yaml").write_text(ORIGINALS["bodies.yaml"], encoding="utf-8")
    assert caught.value.problems[0].startswith(expected), caught.value.problems[0]
