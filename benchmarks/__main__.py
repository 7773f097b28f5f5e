"""`make bench`: each scenario prints one JSON object; all are also written to benchmarks/results/latest.json."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks import gate, postgres_sink, pull, serde

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    start = time.monotonic()
    results: list[dict[str, Any]] = []
    for scenarios in (lambda: [serde.run()], gate.run, pull.run, lambda: [postgres_sink.run()]):
        for result in scenarios():
            print(json.dumps(result), flush=True)
            results.append(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps({"machine": platform.platform(), "results": results,
                                                     "wall_s": round(time.monotonic() - start, 1)}, indent=2))


if __name__ == "__main__":  # the benchmarks spawn processes, which import this module again
    main()
