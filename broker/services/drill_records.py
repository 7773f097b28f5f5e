"""The checks of a flow that need records delivered, on its drill stream: the time from approval to the first record
delivered, the drill body's view against its plan, and a revocation enforced with nothing published after it
delivered under it. Records are synthetic, published through the real ingest API as the stream's publisher."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.domain.ladder import Actor
from broker.domain.topics import delivery_topic
from broker.services.drill_runner import Outcome, failed, not_run, passed
from broker.services.drill_streams import (
    DrillData,
    DrillStream,
    Row,
    expected_view,
    source_of,
    view_problems,
)

# How long the drill keeps publishing while it waits for the first delivery, beyond the 60 s target (a failure then
# says how long it waited), and how long it waits for the gates to work through what it published.
FIRST_RECORD_WAIT_S = 90.0
GATE_WAIT_S = 60.0
ENFORCED_WAIT_S = 15.0
PUBLISH_EVERY_S = 2.0
POLL_S = 0.5
BATCH = 3
# Why the drill makes no rows of a stream, where it is more than a generator not yet written.
UNMADE = {"nhse.hospital-sitrep": "a T5 row is an NHS trust's and lies in every area the trust serves: the "
                                  "trust-to-area lookup (catalog/geography) names no trust serving the area without "
                                  "serving the other area the drill publishes for"}


@dataclass
class RecordChecks:
    """One flow's records on its drill stream: where they live, what was published and where it must go."""

    data: DrillData
    twin: DrillStream
    run: str
    subscriber: str
    role: str
    tier: Mapping[str, Any]
    area: str                   # the drill body's (single-tier) area: its rows
    elsewhere: str | None       # another council's area: rows the drill body must not receive
    publisher: Actor
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    reader: str = "the drill's principal"     # who the view is read as (DrillData.login)
    own: dict[bytes, Row] = field(default_factory=dict)
    others: dict[bytes, Row] = field(default_factory=dict)
    batches: int = 0

    @property
    def topic(self) -> str:
        return delivery_topic(self.subscriber, self.role, self.twin.stream)

    def _publish(self, area: str, into: dict[bytes, Row]) -> Outcome | None:
        """Publish a batch of synthetic rows of `area`; the check's outcome when that could not be done."""
        self.batches += 1
        # Each area's rows lie in no other area the drill publishes for (a trust's rows lie in all it serves).
        other = [a for a in (self.area, self.elsewhere) if a is not None and a != area]
        records = self.data.synthetic(self.twin.real, area, area, BATCH, f"DRILL-{self.run}-{self.batches}",
                                      self.batches, other)
        if records is None:
            return not_run(UNMADE.get(self.twin.real, f"the drill has no synthetic record generator for "
                                                      f"{self.twin.real}"))
        outcomes = self.data.publish(self.twin.stream, self.publisher, records)
        refused = [o for o in outcomes if o.get("status") != "accepted"]
        if refused:
            return failed(f"the ingest API quarantined the drill's synthetic records of {area}: "
                          f"{refused[0].get('reasons')}")
        into.update({source_of(o): records[int(o["index"])] for o in outcomes})
        return None

    def _deliveries(self, as_subscriber: bool = False) -> list[tuple[bytes, Row]]:
        """What the gate delivered (read as the drill's principal), or what the subscriber's own login reads, each
        by the record it was made from."""
        reader = (self.subscriber, self.role) if as_subscriber else None
        return [(headers.get("accord.source", b""), value)
                for value, headers in self.data.delivered(self.topic, reader)]

    def _received(self) -> dict[bytes, Row]:
        return dict(self._deliveries())

    def first_record(self, approved_at: float) -> Outcome:
        """Publish the drill body's rows (and another council's) until one reaches the drill body."""
        if self.elsewhere is not None and (stopped := self._publish(self.elsewhere, self.others)):
            return stopped
        next_batch = self.monotonic()
        while self.monotonic() - approved_at < FIRST_RECORD_WAIT_S:
            if self.monotonic() >= next_batch:
                if stopped := self._publish(self.area, self.own):
                    return stopped
                next_batch = self.monotonic() + PUBLISH_EVERY_S
            if set(self._received()) & set(self.own):
                seconds = round(self.monotonic() - approved_at, 3)
                return passed(f"a synthetic record published as {self.publisher.body} on {self.twin.stream} reached "
                              f"{self.subscriber} ({self.role}) {seconds:.3f} s after the approval", seconds)
            self.sleep(POLL_S)
        behind = self.data.gate_behind(self.twin.stream)
        gate = ("the gate group has committed no position on its ingest topic: no gate worker took the stream on"
                if behind is None else f"the gate group is {behind} records behind on its ingest topic")
        return failed(f"nothing published on {self.twin.stream} reached {self.topic} within "
                      f"{FIRST_RECORD_WAIT_S:g} s of the approval; {gate}")

    def _through_gate(self) -> str | None:
        """Wait until the gates processed everything published on the drill stream; why not, if they did not."""
        deadline = self.monotonic() + GATE_WAIT_S
        while (behind := self.data.gate_behind(self.twin.stream)) != 0:
            if self.monotonic() > deadline:
                return (f"the gate group has not processed the drill's records on {self.twin.stream} within "
                        f"{GATE_WAIT_S:g} s ({'no position committed' if behind is None else f'{behind} behind'})")
            self.sleep(POLL_S)
        return None

    def view(self, stream_fields: list[str]) -> Outcome:
        """Every row of the drill body's area delivered once as its plan says, no other area's row."""
        if not self.own:
            return not_run("no record was published (approval-to-first-record did not run)")
        if why := self._through_gate():
            return failed(why)
        deliveries = self._deliveries(as_subscriber=True)
        received = dict(deliveries)
        problems = []
        if twice := len(deliveries) - len(received):
            problems.append(f"{twice} deliveries repeat a row already delivered")
        if missing := [s for s in self.own if s not in received]:
            problems.append(f"{len(missing)} of {len(self.own)} rows of {self.area} were not delivered")
        if leaked := [s for s in self.others if s in received]:
            problems.append(f"{len(leaked)} rows of {self.elsewhere} were delivered, outside {self.subscriber}'s "
                            "areas")
        if unknown := [s for s in received if s not in self.own and s not in self.others]:
            problems.append(f"{len(unknown)} delivered rows were not published by this drill")
        for source, row in received.items():
            if source in self.own and (wrong := view_problems(expected_view(self.tier, stream_fields,
                                                                            self.own[source]), row)):
                problems.append(f"row {source.decode()}: {'; '.join(wrong)}")
                break
        if problems:
            return failed("; ".join(problems))
        fields = sorted(expected_view(self.tier, stream_fields, next(iter(self.own.values()))))
        return passed(f"{len(self.own)} rows of {self.area} delivered once each with exactly the plan's fields "
                      f"({', '.join(fields)}) and transforms; {len(self.others)} rows of "
                      f"{self.elsewhere or 'no other area'} withheld; read as {self.reader}")

    def delivered_source(self) -> dict[str, Any] | None:
        """Where one of the drill body's delivered rows came from (topic, partition, offset on the ingest topic)."""
        found = next((s for s in self._received() if s in self.own), None)
        if found is None:
            return None
        topic, partition, offset = found.decode().rsplit("/", 2)
        return {"topic": topic, "partition": int(partition), "offset": int(offset)}

    def revocation(self, control: Mapping[str, Any] | None) -> Outcome:
        """The gates applied the revocation at `control` (its offset and time on the control topic) within the
        target, and nothing published after that was delivered under the revoked grant."""
        if control is None:
            return not_run("no revocation was written (grant-withdrawn did not pass)")
        if not set(self._received()) & set(self.own):
            return not_run("nothing was delivered under the grant before it was revoked, so nothing shows that "
                           "the revocation stopped delivery")
        applied_ms = self.data.enforced_at_ms(int(control["offset"]), ENFORCED_WAIT_S)
        if applied_ms is None:
            return failed(f"no gate worker reported applying control offset {control['offset']} within "
                          f"{ENFORCED_WAIT_S:g} s")
        seconds = round(max(0, applied_ms - int(control["timestamp_ms"])) / 1000, 3)
        after: dict[bytes, Row] = {}
        if stopped := self._publish(self.area, after):
            return stopped
        if why := self._through_gate():
            return failed(why)
        if leaked := [s for s in self._received() if s in after]:
            return failed(f"{len(leaked)} of {len(after)} records published after the revocation was enforced were "
                          f"delivered to {self.subscriber} ({self.role})", seconds)
        return passed(f"revocation at control offset {control['offset']} applied by the gates {seconds:.3f} s after "
                      f"it was written; none of {len(after)} records published after it was delivered", seconds)
