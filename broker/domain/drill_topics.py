"""Which Kafka topics a drill run made, so that they can be deleted after it and nothing else ever is.

A run's topics are those of its own drill streams (each a `<publisher>.drill-<run>-<name>` twin): their ingest and
quarantine topics, and the delivery topics of its drill bodies (`drill-<run>-...`) carrying them. A name is the run's
only when it is built from a stream the run recorded making AND carries the run id where a drill puts it; real bodies
cannot be named `drill-` (the catalog refuses them), so no real subscriber's topic can match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from broker.domain.drills import DRILL_BODY_PREFIX
from broker.domain.topics import DELIVER_PREFIX, delivery_topic, ingest_topic, quarantine_topic
from broker.errors import DrillError

# Run ids are short and plain (`uuid4().hex[:6]`): a dash or a dot would let one run's prefix cover another's names.
_RUN_ID = re.compile(r"[a-z0-9]+")


def run_prefix(run: str) -> str:
    """What every drill body and every drill stream's name of run `run` starts with (after its publisher)."""
    if not _RUN_ID.fullmatch(run):
        raise DrillError(f"drill run id {run!r} must be lower-case letters and digits only, so that no other run's "
                         "names start like its own")
    return f"{DRILL_BODY_PREFIX}{run}-"


def is_run_stream(stream: str, run: str) -> bool:
    """True for a drill stream of run `run`: `<publisher>.drill-<run>-<name>`."""
    owner, _, name = stream.partition(".")
    prefix = run_prefix(run)
    return bool(owner) and name.startswith(prefix) and len(name) > len(prefix)


def run_topics(topics: Iterable[str], run: str, streams: Iterable[str]) -> list[str]:
    """Those of `topics` that run `run` made, given the drill streams it recorded making (`streams`; any that is not
    named as the run's is ignored): sorted."""
    prefix = run_prefix(run)
    own = {s for s in streams if is_run_stream(s, run)}
    made = {ingest_topic(s) for s in own} | {quarantine_topic(s) for s in own}
    return sorted(t for t in set(topics) if t in made or _drill_delivery(t, prefix, own))


def _drill_delivery(topic: str, prefix: str, streams: set[str]) -> bool:
    """A delivery topic of a drill body of the run (`prefix`) carrying one of the run's streams."""
    if not topic.startswith(DELIVER_PREFIX):
        return False
    subscriber, _, rest = topic.removeprefix(DELIVER_PREFIX).partition(".")
    role, _, stream = rest.partition(".")
    return (subscriber.startswith(prefix) and bool(role) and stream in streams
            and topic == delivery_topic(subscriber, role, stream))
