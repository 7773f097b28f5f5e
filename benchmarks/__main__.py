"""`make bench`: each scenario prints one JSON object; all are also written to benchmarks/results/latest.json.

`python -m benchmarks geography` (`make bench BENCH=geography`) runs only the gate on the ONS tables against the small
table of before (results in benchmarks/results/geography.json); `python -m benchmarks backfill [N]` only history on a
new grant (N records replayed, default a million; results in benchmarks/results/backfill.json);
`python -m benchmarks transports` only the gate's data path on kafka-python and on librdkafka side by side (results
in benchmarks/results/transports.json).
`python -m benchmarks decode` and `python -m benchmarks encode` run only the gate's Avro decode and its encoding for
24 deliveries per record, before and after issue 18, in process without Kafka (results in
benchmarks/results/codec.json).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks import backfill, fanout_encode, gate, postgres_sink, pull, serde

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    start = time.monotonic()
    results: list[dict[str, Any]] = []
    only_geography = sys.argv[1:] == ["geography"]
    only_backfill = sys.argv[1:2] == ["backfill"]
    only_transports = sys.argv[1:] == ["transports"]
    codec: dict[str, Callable[[], Iterable[dict[str, Any]]]] = {
        "decode": lambda: [serde.run_decode()], "encode": lambda: [fanout_encode.run()]}
    only_codec = bool(sys.argv[1:]) and all(name in codec for name in sys.argv[1:])
    everything: list[Callable[[], Iterable[dict[str, Any]]]] = [
        lambda: [serde.run()], *codec.values(), gate.run, pull.run, lambda: [postgres_sink.run()], backfill.run]
    history = int(sys.argv[2]) if only_backfill and len(sys.argv) > 2 else backfill.HISTORY
    chosen = [gate.run_geography] if only_geography else [lambda: backfill.run(history)] if only_backfill \
        else [gate.run_transports] if only_transports \
        else [codec[name] for name in sys.argv[1:]] if only_codec else everything
    for scenarios in chosen:
        for result in scenarios():
            print(json.dumps(result), flush=True)
            results.append(result)
    RESULTS.mkdir(exist_ok=True)
    summary = {"machine": platform.platform(), "results": results, "wall_s": round(time.monotonic() - start, 1)}
    name = "geography.json" if only_geography else "backfill.json" if only_backfill \
        else "transports.json" if only_transports else "codec.json" if only_codec else "latest.json"
    (RESULTS / name).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":  # the benchmarks spawn processes, which import this module again
    main()
