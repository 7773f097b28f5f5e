"""(l) The files source: a CSV of synthetic T1 cases (UK dates, as a publisher's export has them) read, mapped,
coerced and published through the API with Idempotency-Keys by `accord connect run`'s own code, against a raw
baseline in the same run on the same stack: the API's batched, keyed ingest of the same records already as JSON
(no file, no parsing), the same records a request and requests in flight. The source's own ceiling (reading,
mapping and batching with an in-memory publisher, no network) is reported too.

`python -m benchmarks sources [N]` runs this scenario alone with N rows (default ROWS).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import ingest
from benchmarks.gate_setup import COUNCILS, T1, Bench, hub_catalog, local_bench
from broker.demo.synthetic import spread
from broker.domain.json_avro import to_json
from broker.runtime import sources
from broker.security.api_tokens import issue, signing_key
from connectors.config import load_source
from connectors.sources.base import MemoryPublisher, SourceState, run_source
from connectors.sources.coercion import mapper
from connectors.sources.files import FileSource

ROWS = 100_000
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def run(rows: int = ROWS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="accord-bench-sources-") as tmp, \
            local_bench(Path(tmp) / "stack") as bench:
        bench.apply(hub_catalog(Path(tmp)))
        data = write_csv(Path(tmp) / "cases.csv", _cases(rows, "CSV"))
        parse_only = _parse_only(data, Path(tmp) / "parse-state")
        baseline = ingest.http_ingest(bench, _cases(rows, "RAW"), _cases(ingest.WARMUP, "WARM"), keyed=True)
        source, seconds = _source(bench, data, Path(tmp))
        return {"scenario": "l-file-source", "rows": rows, "request_records": ingest.REQUEST_RECORDS,
                "in_flight": ingest.CLIENTS, "source_records_per_s": round(source, 1),
                "api_keyed_records_per_s": round(baseline, 1), "source/api": round(source / baseline, 3),
                "source_parse_only_records_per_s": round(parse_only, 1), "source_seconds": round(seconds, 1),
                "note": "source: a CSV file (UK dates) through the files source to the ingest topic, "
                        f"{ingest.REQUEST_RECORDS} rows a POST, {ingest.CLIENTS} POSTs in flight, each with its "
                        "Idempotency-Key and the position stored after it; api: the same number of records as "
                        "JSON to the API, keyed, the same batches and concurrency (no file); parse only: the "
                        "source with an in-memory publisher"}


def _cases(rows: int, prefix: str) -> list[dict[str, Any]]:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
    return [{k: to_json(v) for k, v in case.items()}
            for case in spread(day, rows, list(COUNCILS.values()), prefix=f"{prefix}-{uuid.uuid4().hex[:6]}")]


def _uk(value: Any) -> Any:
    """An ISO date as a UK export writes it (25/06/2020); anything else as it is."""
    if isinstance(value, str) and len(value) == 10 and value[4] == "-" and value[7] == "-":
        return f"{value[8:]}/{value[5:7]}/{value[:4]}"
    return "" if value is None else value


def write_csv(path: Path, cases: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, list(cases[0]))
        writer.writeheader()
        for case in cases:
            writer.writerow({k: _uk(v) for k, v in case.items()})
    return path


def _schema() -> dict[str, Any]:
    return dict(json.loads((SCHEMAS / f"{T1}.avsc").read_text()))


def _parse_only(data: Path, state: Path) -> float:
    source = FileSource(data, mapper(_schema()), max_rows=ingest.REQUEST_RECORDS)
    summary = run_source("bench-parse", T1, source, MemoryPublisher(), SourceState(state),
                         in_flight=ingest.CLIENTS)
    return summary.rows_per_s


def _source(bench: Bench, data: Path, tmp: Path) -> tuple[float, float]:
    token = issue(signing_key(bench.state_dir / "secrets"), "ukhsa", "ig-lead", "benchmark", dt.timedelta(hours=1),
                  dt.datetime.now(dt.UTC))
    (tmp / "api.token").write_text(token)
    config = tmp / "source.yaml"
    config.write_text(f"""\
source: files
name: bench-{uuid.uuid4().hex[:8]}
stream: {T1}
state_dir: source-state
api: {{url: "{bench.endpoints.api_url}", token_file: api.token, timeout_s: 300}}
schema_file: {SCHEMAS / f"{T1}.avsc"}
batch: {{rows: {ingest.REQUEST_RECORDS}, in_flight: {ingest.CLIENTS}}}
files: {{path: {data}}}
""")
    started = time.perf_counter()
    summary = sources.run(load_source(config))
    seconds = time.perf_counter() - started
    if summary.run.accepted != summary.run.rows:
        raise AssertionError(f"the API or the source refused rows of the benchmark: {summary.line()}")
    return summary.run.rows / seconds, seconds
