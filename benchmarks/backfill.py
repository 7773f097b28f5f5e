"""History on a new grant: records/s the gate replays, against the live gate's records/s in the same run.

`python -m benchmarks backfill [N]` (`make bench BENCH=backfill`): on a local stack of its own, the real gate first
delivers live records to one national subscriber (scenario b's hub: every record delivered), then the hub's
agreement is applied again asking for history (`backfill:` a date before every record) and a fresh gate worker
replays the N records of the ingest topic to it. Results in benchmarks/results/backfill.json.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.gate_setup import (
    HUB,
    T1,
    Bench,
    encoded_cases,
    frozen_heap,
    group,
    hub_catalog,
    local_bench,
    prefill,
)
from benchmarks.gate_throughput import real_gate
from broker.domain.topics import delivery_topic
from broker.runtime.gate import open_gate

HISTORY = 1_000_000  # the figure; `python -m benchmarks backfill 20000` for a quick look
FULL_RUN_HISTORY = 100_000  # in `make bench`, which runs every benchmark within 10 minutes
LIVE_RECORDS = 30_000
WARMUP = 1_000
PREFILL_CHUNK = 50_000  # encoded and published a chunk at a time, so a million records never sit in memory
HUB_TOPIC = delivery_topic(HUB, "dph", T1)


def run(history: int = HISTORY) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="accord-bench-backfill-") as tmp, local_bench(Path(tmp)) as bench:
        catalog = hub_catalog(Path(tmp))
        bench.apply(catalog)
        bench.warmup = encoded_cases(bench, WARMUP, "BW", seed=1)
        live_n = min(history, LIVE_RECORDS)
        live = real_gate(bench, "backfill-live-gate", encoded_cases(bench, live_n, "BL"), [HUB_TOPIC])
        for start in range(0, max(0, history - live_n - WARMUP), PREFILL_CHUNK):
            n = min(PREFILL_CHUNK, history - live_n - WARMUP - start)
            prefill(bench, encoded_cases(bench, n, f"BH{start}", seed=start))
        agreement = catalog / "agreements" / "bench-hub.yaml"
        agreement.write_text(agreement.read_text() + "backfill: 2020-01-01\n")
        bench.apply(catalog)
        replay = _replay(bench)
        ratio = round(replay["records_per_s"] / live["records_per_s"], 2)
        return [live, replay, {"scenario": "backfill-ratio", "replay/live": ratio, "goal": 1.0,
                               "met": ratio >= 1.0}]


def _replay(bench: Bench) -> dict[str, Any]:
    """A fresh gate worker marks the end of the ingest topic and replays everything before it; timed from its first
    step until the last partition's replay is committed."""
    settings = bench.settings(group("backfill-replay"), "latest")
    with open_gate(bench.gate_endpoints, settings, "bench-backfill-replay") as gate:
        gate.start()
        while not gate.ready():
            gate.step()
        start = time.perf_counter()
        steps = 0
        with frozen_heap():  # as the live gate it is set against
            while not _finished(gate.history):
                gate.step()
                steps += 1
                if time.perf_counter() - start > 3600:
                    raise RuntimeError("the replay did not finish within an hour")
        seconds = time.perf_counter() - start
        assert gate.history is not None
        replay = gate.history.replays[next(k for k in gate.history.replays if k[1] == HUB_TOPIC)]
        read, total = replay.counts()
    return {"scenario": "backfill-replay", "records": read, "seconds": round(seconds, 3),
            "records_per_s": round(read / seconds, 1), "delivered": replay.delivered, "gate_steps": steps,
            "partitions": len(replay.partitions), "to_read": total}


def _finished(history: Any) -> bool:
    if history is None:
        return False
    replays = [r for (_, topic), r in history.replays.items() if topic == HUB_TOPIC]
    return bool(replays) and all(r.finished and all(p.start is not None for p in r.partitions.values())
                                 for r in replays)
