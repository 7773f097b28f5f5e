"""The HTTP and PostgreSQL sources' YAML: the examples of docs/pull-sources.md load as written, files they name are
read from the config's folder, and a mistake is named with its file, line and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connectors.config import SinkConfigError, load_source
from connectors.sources.config import HttpSourceConfig, PostgresSourceConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "pull-sources.md"


def examples() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_documented_examples_load(tmp_path: Path) -> None:
    loaded = []
    for n, text in enumerate(examples()):
        path = tmp_path / f"example{n}.yaml"
        path.write_text(text)
        loaded.append(load_source(path))
    http, database = loaded
    assert isinstance(http, HttpSourceConfig) and isinstance(database, PostgresSourceConfig)
    assert http.http.auth is not None and http.http.auth.token_file == tmp_path / "dashboard.token"
    assert http.http.watermark.format == "areaType=nhsTrust;date>={value}"
    assert database.postgres.password_file == tmp_path / "db.password"
    assert database.postgres.tiebreak == ["id"] and database.columns["date"] == "day"


@pytest.mark.parametrize(("change", "line", "at", "message"), [
    ('format: "date>={value}"', 'format: "date>=X"', "    field: date",  # a section's mistake: its first line
     "http.watermark: Value error, format must hold"),
    ("paging: {rows: data, next: pagination.next}", "paging: {rows: data, next: n, page_param: page}",
     "  paging:", "http.paging: Value error, page by `next`"),
    ("requests_per_s: 5 ", "requests_per_s: 0 ", "  requests_per_s:", "http.requests_per_s: Input should be greater"),
])
def test_a_mistake_in_an_http_config_is_named_with_its_line(tmp_path: Path, change: str, line: str, at: str,
                                                            message: str) -> None:
    text = examples()[0].replace('format: "areaType=nhsTrust;date>={value}"', 'format: "date>={value}"')
    assert change in text
    path = tmp_path / "source.yaml"
    path.write_text(text.replace(change, line))
    with pytest.raises(SinkConfigError) as error:
        load_source(path)
    number = next(i for i, text_line in enumerate(path.read_text().splitlines(), start=1)
                  if text_line.startswith(at))
    assert f"{path}:{number}: {message}" in str(error.value)

