"""`make bench`: each scenario prints one JSON object; all are also written to benchmarks/results/latest.json.

`python -m benchmarks geography` (`make bench BENCH=geography`) runs only the gate on the ONS tables against the small
table of before (results in benchmarks/results/geography.json).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks import gate, postgres_sink, pull, serde

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    start = time.monotonic()
    results: list[dict[str, Any]] = []
    only_geography = sys.argv[1:] == ["geography"]
    everything: list[Callable[[], Iterable[dict[str, Any]]]] = [
        lambda: [serde.run()], gate.run, pull.run, lambda: [postgres_sink.run()]]
    for scenarios in [gate.run_geography] if only_geography else everything:
        for result in scenarios():
            print(json.dumps(result), flush=True)
            results.append(result)
    RESULTS.mkdir(exist_ok=True)
    summary = {"machine": platform.platform(), "results": results, "wall_s": round(time.monotonic() - start, 1)}
    (RESULTS / ("geography.json" if only_geography else "latest.json")).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":  # the benchmarks spawn processes, which import this module again
    main()
