"""The layering rules of docs/architecture.md, read from the source: which packages may import which, and the one
module that spells topic names."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROKER = ROOT / "broker"
# Code that ships or measures the product; tests may spell a topic to assert what a user sees.
PRODUCT = [ROOT / "broker", ROOT / "connectors", ROOT / "benchmarks"]
TOPICS_MODULE = BROKER / "domain" / "topics.py"
TOPIC_LITERAL = re.compile(r"""["'](ingest|deliver|quarantine)\.|["']_accord\.""")
THIRD_PARTY_IO = ("kafka", "confluent_kafka", "opa_client", "psycopg", "prometheus_client")


def imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, at any depth (imports inside functions count too)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def modules(package: str) -> list[Path]:
    return sorted((BROKER / package).rglob("*.py"))


def offending(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {name}" for path in modules(package) for name in imports(path)
            if any(name == f or name.startswith(f + ".") for f in forbidden)]


@pytest.mark.parametrize(("package", "forbidden"), [
    ("services", ("broker.api", "broker.local", "broker.cli", "broker.catalog", "broker.runtime", "broker.demo",
                  "broker.adapters")),
    ("adapters", ("broker.services", "broker.runtime", "broker.api", "broker.cli", "broker.demo")),
    ("domain", ("broker.services", "broker.adapters", "broker.runtime", "broker.api", "broker.cli", "broker.local",
                "broker.security", "broker.demo", "broker.catalog", "httpx", "fastapi", *THIRD_PARTY_IO)),
    ("api", ("broker.runtime", "broker.cli", "broker.local", "broker.demo")),
    ("security", ("broker.runtime", "broker.api", "broker.cli", "broker.demo", "broker.local")),
])
def test_a_layer_imports_nothing_above_it(package: str, forbidden: tuple[str, ...]) -> None:
    assert offending(package, forbidden) == []


def test_only_adapters_import_the_io_libraries() -> None:
    outside = [p for p in BROKER.rglob("*.py") if "adapters" not in p.relative_to(BROKER).parts]
    found = [f"{path.relative_to(ROOT)} imports {name}" for path in outside for name in imports(path)
             if name.split(".")[0] in THIRD_PARTY_IO]
    assert found == []


def test_connectors_are_use_cases_that_import_no_io_library() -> None:
    # A sink reaches Kafka, the registry and its target through ports; broker/runtime/connect.py wires adapters in.
    forbidden = ("broker.adapters", "broker.runtime", "broker.cli", "broker.local", "broker.api", "broker.demo",
                 *THIRD_PARTY_IO)
    found = [f"{path.relative_to(ROOT)} imports {name}" for path in sorted((ROOT / "connectors").rglob("*.py"))
             for name in imports(path) if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert found == []
    assert len(list((ROOT / "connectors").rglob("*.py"))) > 2


def test_topic_names_are_spelled_in_one_module() -> None:
    spelled = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
               for base in PRODUCT for path in sorted(base.rglob("*.py")) if path != TOPICS_MODULE
               for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
               if TOPIC_LITERAL.search(line.split("#")[0])]
    assert spelled == []


def test_the_checks_see_the_code_they_guard() -> None:
    # A rename of a package would otherwise leave these tests passing over nothing.
    for package in ("services", "adapters", "domain", "api", "security", "runtime", "cli"):
        assert len(modules(package)) > 2, package
    assert TOPIC_LITERAL.search('x = "ingest.a"') and TOPIC_LITERAL.search("'_accord.control'")
