"""Reads a catalog directory's YAML into models, keeping the line of every key so errors point at the file."""

from __future__ import annotations

import datetime as dt
import re
import reprlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from broker.catalog.models import LADDER, Agreement, BodiesFile, Catalog, LadderFile, Origin, StreamsFile, Template
from broker.domain.partitions import StreamPartitions
from broker.errors import ConfigError

Entry = TypeVar("Entry", bound=BaseModel)
# Wrong values are quoted in messages, cut short: a value built from aliases can print as megabytes.
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 80
_QUOTE.maxlevel = 2


class CatalogError(ConfigError):
    """The catalog is invalid; `problems` holds one `file:line: field: what to do` line per problem."""

    def __init__(self, summary: str, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n  ".join([summary, *self.problems]))


class Problems:
    """Collects problems in the order found, once each (a template's fault is met once per agreement)."""

    def __init__(self) -> None:
        self._found: dict[str, None] = {}

    def add(self, where: str, message: str) -> None:
        self._found[f"{where}: {message}"] = None

    def __bool__(self) -> bool:
        return bool(self._found)

    def __iter__(self) -> Iterator[str]:
        return iter(self._found)

    def raise_if_any(self, subject: str) -> None:
        if self._found:
            count = len(self._found)
            raise CatalogError(f"{subject}: {count} problem{'s' * (count != 1)}; fix each line below", self)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose impossible dates (2027-13-30) and overlong numbers are marked errors with a line, not a bare
    ValueError."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> dt.date | dt.datetime:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a real date or time ({exc})", node.start_mark) from exc

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError as exc:  # Python refuses to read an integer of more than 4300 digits
            raise yaml.constructor.ConstructorError(
                None, None, f"a number of {len(node.value)} characters is too long to read ({exc})",
                node.start_mark) from exc


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


@dataclass(frozen=True)
class _Parsed:
    data: Any
    origin: Origin


def load_catalog(directory: Path) -> Catalog:
    """Read and check every file of `directory`; ConfigError lists every problem with its file:line and field."""
    if not directory.is_dir():
        raise ConfigError(f"catalog directory {directory} does not exist; pass the folder holding bodies.yaml, "
                          "streams.yaml, ladder.yaml, templates/ and agreements/")
    problems = Problems()
    reader = _Reader(directory, problems)
    bodies = reader.listed("bodies.yaml", "bodies", BodiesFile)
    streams = reader.listed("streams.yaml", "streams", StreamsFile)
    templates = reader.each("templates", Template, "template")
    agreements = reader.each("agreements", Agreement, "agreement")
    ladder = reader.single("ladder.yaml", LadderFile, ("ladder", "emergency"))
    origins: dict[str, Origin] = {}
    if ladder is not None:
        origins[LADDER] = ladder[1]
    catalog = Catalog(
        bodies=_by_id("body", bodies, "id", origins, problems),
        streams=_by_id("stream", streams, "id", origins, problems),
        templates=_by_id("template", templates, "template", origins, problems),
        agreements=_by_id("agreement", agreements, "agreement", origins, problems),
        ladder=ladder[0] if ladder is not None else None,
        origins=origins,
    )
    problems.raise_if_any(f"the catalog in {directory} does not load")
    return catalog


def load_stream_partitions(directory: Path) -> dict[str, StreamPartitions]:
    """Each stream's partition counts, from `directory`'s streams.yaml alone: the API and the gate workers create
    ingest topics before (and whether or not) a catalog is applied. No streams.yaml: {} (every stream gets the
    defaults); an invalid one: CatalogError with its file:line."""
    if not (directory / "streams.yaml").is_file():
        return {}
    problems = Problems()
    streams = _Reader(directory, problems).listed("streams.yaml", "streams", StreamsFile)
    problems.raise_if_any(f"{directory / 'streams.yaml'} does not load")
    return {stream.id: StreamPartitions(stream.partitions, stream.delivery_partitions) for stream, _ in streams}


class _Reader:
    def __init__(self, directory: Path, problems: Problems) -> None:
        self.directory = directory.resolve()
        self.problems = problems

    def shown(self, path: Path) -> str:
        # Relative to the catalog's parent, so messages read `catalog/agreements/t1-leicester.yaml:7`.
        return str(path.relative_to(self.directory.parent))

    def listed(self, name: str, key: str, model: type[BaseModel]) -> list[tuple[Any, Origin]]:
        """The entries of a file holding one top-level list (`bodies:` or `streams:`)."""
        path = self.directory / name
        if not path.is_file():
            self.problems.add(self.shown(path), f"missing; create it with a top-level `{key}:` list")
            return []
        parsed = self.parse(path)
        document = self.validate(parsed, model, key) if parsed else None
        if document is None or parsed is None:
            return []
        entries = getattr(document, key)
        return [(entry, parsed.origin.model_copy(update={"prefix": (key, str(i))})) for i, entry in enumerate(entries)]

    def single(self, name: str, model: type[Entry], keys: tuple[str, ...]) -> tuple[Entry, Origin] | None:
        """The one document of a required file such as ladder.yaml, with the top-level `keys` named in messages."""
        path = self.directory / name
        if not path.is_file():
            listed = " and ".join(f"`{key}:`" for key in keys)
            self.problems.add(self.shown(path), f"missing; create it with top-level {listed} "
                                                "(catalog/README.md shows their keys)")
            return None
        parsed = self.parse(path)
        document = self.validate(parsed, model, keys[0]) if parsed else None
        return (document, parsed.origin) if document is not None and parsed is not None else None

    def each(self, folder: str, model: type[Entry], key: str) -> list[tuple[Entry, Origin]]:
        """One entry per `*.yaml` file of `folder` (a missing folder holds none)."""
        found: list[tuple[Entry, Origin]] = []
        for path in sorted((self.directory / folder).glob("*.y*ml")):
            if path.suffix != ".yaml":
                self.problems.add(self.shown(path), f"ignored: rename it to {path.stem}.yaml so it is read")
                continue
            parsed = self.parse(path)
            entry = self.validate(parsed, model, f"{key}: <id>") if parsed else None
            if entry is not None and parsed is not None:
                found.append((entry, parsed.origin))
        return found

    def parse(self, path: Path) -> _Parsed | None:
        shown = self.shown(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.add(shown, f"cannot read it ({exc}); check the file's permissions and encoding")
            return None
        try:
            node, data = _compose(text)
        except yaml.YAMLError as exc:
            kind = "value" if isinstance(exc, yaml.constructor.ConstructorError) else "syntax"
            self.problems.add(_yaml_where(shown, exc, text), f"YAML {kind} error: {_yaml_reason(exc)}; fix the YAML")
            return None
        except RecursionError:
            self.problems.add(shown, "YAML nested too deeply to read (hundreds of levels of [ or {); flatten it")
            return None
        if node is None:
            self.problems.add(f"{shown}:1", "the file is empty; add its content or delete it")
            return None
        if problem := _Expansion().problem(node):
            self.problems.add(f"{shown}:{problem[0]}", problem[1])
            return None
        lines: dict[str, int] = {}
        _mark_lines(node, (), lines, shown, self.problems)
        return _Parsed(data, Origin(file=shown, lines=lines))

    def validate(self, parsed: _Parsed, model: type[Entry], first_key: str) -> Entry | None:
        if not isinstance(parsed.data, dict):
            self.problems.add(f"{parsed.origin.file}:1", f"expected a mapping starting with `{first_key}`")
            return None
        try:
            return model.model_validate(parsed.data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                self.add_error(parsed.origin, error)
            return None

    def add_error(self, origin: Origin, error: ErrorDetails) -> None:
        if error["type"] == "too_short" and len(error["input"]) >= error.get("ctx", {}).get("min_length", 1):
            return  # pydantic counts only the valid entries; each invalid one has its own error already
        # "[key]" marks a bad mapping key; the key itself is the last real element of the path.
        path = [str(part) for part in error["loc"] if part != "[key]"]
        self.problems.add(origin.at(*path), _message(error))


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (None for an empty file) and its data; YAMLError if it is not one YAML document."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


class _Expansion:
    """Counts a document's nodes with every alias written out: a few nested aliases can stand for billions of
    values (a "billion laughs"), and an alias inside its own anchor for an endless document."""

    LIMIT = 100_000  # far more than any catalog file holds

    def __init__(self) -> None:
        self._sizes: dict[int, int] = {}
        self._open: set[int] = set()
        self._loop_line = 0

    def problem(self, root: yaml.Node) -> tuple[int, str] | None:
        """(line, what to do) when the document is endless or too large, else None."""
        size = self._size(root)
        if size < 0:
            return self._loop_line, ("an alias (*name) inside its own anchor (&name) makes the document endless; "
                                     "remove it")
        if size > self.LIMIT:
            return 1, (f"its aliases expand to {size} values, more than the {self.LIMIT} a catalog file may hold; "
                       "write the content out instead of nesting aliases")
        return None

    def _size(self, node: yaml.Node) -> int:
        if id(node) in self._open:
            self._loop_line = node.start_mark.line + 1
            return -1
        if id(node) not in self._sizes:
            self._open.add(id(node))
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            sizes = [self._size(child) for child in children]
            self._open.discard(id(node))
            self._sizes[id(node)] = -1 if -1 in sizes else 1 + sum(sizes)
        return self._sizes[id(node)]


def _mark_lines(node: yaml.Node, path: tuple[str, ...], lines: dict[str, int], shown: str,
                problems: Problems) -> None:
    lines.setdefault(".".join(path), node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            child = (*path, str(key_node.value))
            line = key_node.start_mark.line + 1
            if child[-1] in seen:
                # PyYAML keeps the last of two equal keys without a word; a reviewer would read the first.
                problems.add(f"{shown}:{line}: {'.'.join(child)}", "duplicate key; keep only one")
            seen.add(child[-1])
            lines.setdefault(".".join(child), line)
            _mark_lines(value_node, child, lines, shown, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _mark_lines(item, (*path, str(index)), lines, shown, problems)


def _yaml_where(shown: str, exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return f"{shown}:{mark.line + 1}"
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML forbids, found before any parsing
        line = text.count("\n", 0, exc.position) + 1
        return f"{shown}:{line}"
    return shown


def _yaml_reason(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    # The parser notices a fault where it gets stuck; the context says where the unclosed thing began.
    if context and context_mark is not None:
        return f"{problem} ({context} started at line {context_mark.line + 1})"
    return f"{problem} ({context})" if context else str(problem)


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind in ("literal_error", "enum"):
        allowed = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        return f"{_QUOTE.repr(error['input'])} is not one of {', '.join(allowed)}"
    if kind == "missing":
        return "missing; this key is required"
    if kind == "extra_forbidden":
        return "unknown key; remove it or fix its spelling (catalog/README.md lists the keys)"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "timezone_aware":
        return f"{error['input']} has no timezone; write RFC 3339 with an offset, e.g. 2026-01-01T00:00:00Z"
    if kind == "greater_than_equal":
        return f"{_QUOTE.repr(error['input'])} is too small; it must be at least {error.get('ctx', {}).get('ge')}"
    if kind == "less_than_equal":
        return f"{_QUOTE.repr(error['input'])} is too large; it must be at most {error.get('ctx', {}).get('le')}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{_QUOTE.repr(error['input'])} is not a whole number; write one without quotes, e.g. 12"
    if kind == "too_short":
        least = error.get("ctx", {}).get("min_length", 1)
        return f"needs at least {least} {'entry' if least == 1 else 'entries'}"
    if kind in ("model_type", "dict_type"):
        return f"expected a mapping, not {_QUOTE.repr(error['input'])}"
    return str(error["msg"])


def _by_id(kind: str, entries: list[tuple[Any, Origin]], id_key: str, origins: dict[str, Origin],
           problems: Problems) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for entry, origin in entries:
        key = f"{kind}:{entry.id}"
        if key in origins:
            problems.add(origin.at(id_key), f"duplicate {kind} id {entry.id!r}, already defined at "
                         f"{origins[key].at(id_key)}; ids must be unique, rename one")
            continue
        found[entry.id] = entry
        origins[key] = origin
    return found
