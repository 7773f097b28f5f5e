"""`make bench`: each scenario prints one JSON object; all are also written to benchmarks/results/latest.json."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from benchmarks import serde

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    results = [serde.run()]
    for result in results:
        print(json.dumps(result))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps({"machine": platform.platform(), "results": results}, indent=2))


main()
