"""`make bench`: each scenario prints one JSON object; all are also written to benchmarks/results/latest.json.

`python -m benchmarks geography` (`make bench BENCH=geography`) runs only the gate on the ONS tables against the small
table of before (results in benchmarks/results/geography.json); `python -m benchmarks backfill [N]` only history on a
new grant (N records replayed, default a million; results in benchmarks/results/backfill.json); `python -m benchmarks
ingest [N]` only publishing over HTTP against a raw producer (N records, default 20,000; results in
benchmarks/results/api-ingest.json).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks import backfill, gate, ingest, postgres_sink, pull, serde

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    start = time.monotonic()
    results: list[dict[str, Any]] = []
    only_geography = sys.argv[1:] == ["geography"]
    only_backfill = sys.argv[1:2] == ["backfill"]
    only_ingest = sys.argv[1:2] == ["ingest"]
    everything: list[Callable[[], Iterable[dict[str, Any]]]] = [
        lambda: [serde.run()], gate.run, pull.run, lambda: [postgres_sink.run()], lambda: [ingest.run()],
        backfill.run]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else None
    chosen = [gate.run_geography] if only_geography \
        else [lambda: backfill.run(count or backfill.HISTORY)] if only_backfill \
        else [lambda: [ingest.run(count or ingest.RECORDS)]] if only_ingest else everything
    for scenarios in chosen:
        for result in scenarios():
            print(json.dumps(result), flush=True)
            results.append(result)
    RESULTS.mkdir(exist_ok=True)
    summary = {"machine": platform.platform(), "results": results, "wall_s": round(time.monotonic() - start, 1)}
    name = "geography.json" if only_geography else "backfill.json" if only_backfill \
        else "api-ingest.json" if only_ingest else "latest.json"
    (RESULTS / name).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":  # the benchmarks spawn processes, which import this module again
    main()
