"""`make bench`: each scenario prints one JSON object; all are also written to benchmarks/results/latest.json.

`python -m benchmarks NAME [N]` runs only one set (results in benchmarks/results/<file>):
- `geography` (`make bench BENCH=geography`): the gate on the ONS tables against the small table of before
  (geography.json);
- `backfill [N]`: history on a new grant, N records replayed, default a million (backfill.json; `make bench`
  replays 100,000 so that the whole run ends within 10 minutes);
- `transports`: the gate's data path on kafka-python and on librdkafka side by side (transports.json);
- `decode`, `encode` (or both): the gate's Avro decode and its encoding for 24 deliveries per record, before and
  after issue 18, in process without Kafka (codec.json);
- `ingest [N]`: publishing over HTTP against a raw producer, N records, default 20,000 (api-ingest.json);
- `workers [N]`: N records (default 40,000) on the ingest topic's partitions drained by 1, 2 and 4 gate worker
  processes, records/s each and the ratio to one (workers.json);
- `sources [N]`: a CSV through the files source against the API's keyed ingest of the same records, N rows,
  default 100,000 (sources.json).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks import backfill, fanout_encode, gate, ingest, postgres_sink, pull, serde, sources, workers

RESULTS = Path(__file__).resolve().parent / "results"
Scenarios = Callable[[], Iterable[dict[str, Any]]]


def main() -> None:
    start = time.monotonic()
    results: list[dict[str, Any]] = []
    names = sys.argv[1:]
    count = int(names[1]) if len(names) > 1 and names[1].isdigit() else None
    codec: dict[str, Scenarios] = {"decode": lambda: [serde.run_decode()], "encode": lambda: [fanout_encode.run()]}
    alone: dict[str, tuple[list[Scenarios], str]] = {
        "geography": ([gate.run_geography], "geography.json"),
        "backfill": ([lambda: backfill.run(count or backfill.HISTORY)], "backfill.json"),
        "transports": ([gate.run_transports], "transports.json"),
        "ingest": ([lambda: [ingest.run(count or ingest.RECORDS)]], "api-ingest.json"),
        "workers": ([lambda: workers.run(count or workers.RECORDS)], "workers.json"),
        "sources": ([lambda: [sources.run(count or sources.ROWS)]], "sources.json"),
    }
    everything: list[Scenarios] = [lambda: [serde.run()], *codec.values(), gate.run, pull.run,
                                   lambda: [postgres_sink.run()], lambda: [ingest.run()], lambda: [sources.run()],
                                   lambda: backfill.run(backfill.FULL_RUN_HISTORY), workers.run]
    if names and names[0] in alone:
        chosen, name = alone[names[0]]
    elif names and all(n in codec for n in names):
        chosen, name = [codec[n] for n in names], "codec.json"
    elif names:
        raise SystemExit(f"unknown benchmark {names[0]!r}: run all, or one of {', '.join([*alone, *codec])}")
    else:
        chosen, name = everything, "latest.json"
    for scenarios in chosen:
        for result in scenarios():
            print(json.dumps(result), flush=True)
            results.append(result)
    RESULTS.mkdir(exist_ok=True)
    summary = {"machine": platform.platform(), "results": results, "wall_s": round(time.monotonic() - start, 1)}
    (RESULTS / name).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":  # the benchmarks spawn processes, which import this module again
    main()
