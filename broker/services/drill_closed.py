"""The drill's fail-closed check: with the policy engine (OPA) stopped, nothing published on the drill stream reaches
the drill body, and once OPA is back every such record does, exactly once; then a gate worker killed with SIGKILL
while records are published loses none of them and delivers none twice once it runs again.

The drill stops processes only where it controls them (the local stack, `accord local up`): stopping OPA stops every
real delivery too, which on any other deployment is its operator's call. There the check is not run, saying why.
While OPA is down the ingest API refuses every call (its authorisation is OPA's): the records are then published
onto the stream's ingest topic through the same validated ingest the API runs, as a publisher connected to Kafka
directly does, so that they wait in Kafka for the gate.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from broker.errors import AccordError
from broker.services.drill_records import RecordChecks
from broker.services.drill_runner import Outcome, failed, not_run, passed
from broker.services.drill_streams import Row, source_of

NOT_LOCAL = ("the drill controls processes only on the local stack (`accord local up`); stopping OPA or a gate "
             "worker elsewhere would stop real deliveries the drill cannot bring back")
# A gate asks OPA whether it is ready at most once a second (Planner.check_every_s): after NOTICE_S every worker has
# asked since OPA stopped. OBSERVE_S is how long nothing may reach the drill body while OPA is down.
NOTICE_S = 3.0
OBSERVE_S = 5.0
HOLD_S = 600.0              # how long a supervisor leaves the stopped OPA alone at most (lifted when it starts again)
DELIVER_WAIT_S = 90.0       # a bound for failing, never a measurement
RESTART_WAIT_S = 120.0
POLL_S = 0.5
BATCH = 3


class Processes(Protocol):
    """The deployment's processes, where the drill may stop and start them."""

    def stop_opa(self, hold_s: float) -> None:
        """Stop the policy engine and keep it stopped (a supervisor leaves it alone) for up to `hold_s`."""

    def start_opa(self) -> None:
        """Start the policy engine again where it was, and lift the hold."""

    def kill_gate(self) -> str:
        """Kill a gate worker with SIGKILL (no chance to finish or abort its transaction); which one (its pid)."""

    def gate_back(self, timeout_s: float) -> str:
        """Have the killed gate worker running again: restarted by the supervisor when there is one, else started
        by the drill; who did it. AccordError when it does not run within `timeout_s`."""


class DirectIngest(Protocol):
    """Accord's validated ingest onto a stream's ingest topic, without the ingest API (which needs OPA)."""

    def prepare(self, stream: str) -> None:
        """While OPA is up: fetch what publishing on `stream` needs from services that ask OPA (the registry)."""

    def publish(self, stream: str, records: Sequence[Row]) -> list[dict[str, Any]]:
        """Publish as the ingest API does; each record's outcome (status, index, topic, partition, offset)."""


@dataclass(frozen=True)
class Control:
    """What the check drives: the processes, and ingest that needs no OPA (and the clock it waits on)."""

    processes: Processes
    ingest: DirectIngest
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic


@dataclass
class FailClosed:
    """One flow's fail-closed check over its drill stream's records (RecordChecks, once switch-on made them)."""

    control: Control | None
    batches: int = 0

    def sleep(self, seconds: float) -> None:
        if self.control is not None:
            self.control.sleep(seconds)

    def monotonic(self) -> float:
        return self.control.monotonic() if self.control is not None else time.monotonic()

    def run(self, records: RecordChecks | None, no_records: str) -> Outcome:
        if self.control is None:
            return not_run(NOT_LOCAL)
        if records is None:
            return not_run(no_records)
        if not set(self._sources(records)) & set(records.own):
            return not_run("nothing reached the drill body yet (approval-to-first-record did not pass), so a gate "
                           "holding records back would show nothing")
        control, begun = self.control, self.monotonic()
        control.ingest.prepare(records.twin.stream)
        try:
            control.processes.stop_opa(HOLD_S)
            self.sleep(NOTICE_S)
            during, how = self._publish_while_down(records, control.ingest)
            self.sleep(OBSERVE_S)
            leaked = [s for s in self._sources(records) if s in during]
        finally:
            control.processes.start_opa()
        problems = []
        if leaked:
            problems.append(f"{len(leaked)} of {len(during)} records published while OPA was stopped were delivered "
                            f"to {records.subscriber} ({records.role}) within {OBSERVE_S:g} s")
        problems += self._once_each(records, during, "published while OPA was stopped")
        if problems:
            return failed("; ".join(problems) + "; the gate worker restart was not tried", self._since(begun))
        restarted = self._restart(records, control.processes)
        if isinstance(restarted, Outcome):
            return restarted
        restart_reason, published = restarted
        return passed(f"with OPA stopped, {len(during)} records published on {records.twin.stream} ({how}) and none "
                      f"delivered in {OBSERVE_S:g} s; once OPA was started again each was delivered exactly once. "
                      f"{restart_reason}: each of the {published} records published around it delivered exactly "
                      "once", self._since(begun))

    def _publish_while_down(self, records: RecordChecks, ingest: DirectIngest) -> tuple[set[bytes], str]:
        """Records of the drill body's area published while OPA is down: through the ingest API if it takes them,
        else (it refuses, failing closed) directly onto the ingest topic."""
        rows = self._rows(records)
        try:
            outcomes = records.data.publish(records.twin.stream, records.publisher, rows)
            how = "the ingest API took them with OPA down"
        except AccordError as exc:
            outcomes = ingest.publish(records.twin.stream, rows)
            how = (f"the ingest API refused them, failing closed too: {exc}; so they went onto the ingest topic "
                   "directly, as a publisher connected to Kafka does")
        return self._accepted(outcomes), how

    def _restart(self, records: RecordChecks, processes: Processes) -> Outcome | tuple[str, int]:
        """Kill a gate worker between two batches and publish a third once it runs again: every record delivered
        exactly once."""
        begun = self.monotonic()
        published = self._accepted(records.data.publish(records.twin.stream, records.publisher,
                                                         self._rows(records)))
        killed = processes.kill_gate()
        published |= self._accepted(records.data.publish(records.twin.stream, records.publisher,
                                                          self._rows(records)))
        try:
            who = processes.gate_back(RESTART_WAIT_S)
        except AccordError as exc:
            return failed(f"gate worker {killed} was killed with SIGKILL and did not run again: {exc}",
                          self._since(begun))
        published |= self._accepted(records.data.publish(records.twin.stream, records.publisher,
                                                          self._rows(records)))
        if problems := self._once_each(records, published, "published around the gate worker's restart"):
            return failed(f"gate worker {killed} killed with SIGKILL and {who}: " + "; ".join(problems),
                          self._since(begun))
        return f"Gate worker {killed} killed with SIGKILL and {who}", len(published)

    def _once_each(self, records: RecordChecks, wanted: set[bytes], what: str) -> list[str]:
        """Wait until every record of `wanted` is delivered and the gates processed the stream; what went wrong."""
        deadline = self.monotonic() + DELIVER_WAIT_S
        while True:
            counts = Counter(s for s in self._sources(records) if s in wanted)
            behind = records.data.gate_behind(records.twin.stream)
            if (len(counts) == len(wanted) and behind == 0) or self.monotonic() > deadline:
                break
            self.sleep(POLL_S)
        problems = []
        if missing := sorted(s.decode() for s in wanted - set(counts)):
            problems.append(f"{len(missing)} of {len(wanted)} records {what} were not delivered within "
                            f"{DELIVER_WAIT_S:g} s (lost: {', '.join(missing[:5])})")
        if twice := sorted(s.decode() for s, n in counts.items() if n > 1):
            problems.append(f"{len(twice)} records {what} were delivered more than once ({', '.join(twice[:5])})")
        return problems

    def _rows(self, records: RecordChecks) -> list[Row]:
        self.batches += 1
        made = records.data.synthetic(records.twin.real, records.area, records.area, BATCH,
                                      f"DRILL-{records.run}-closed-{self.batches}", 1000 + self.batches)
        if not made:
            raise AccordError(f"the drill has no synthetic record generator for {records.twin.real}")
        return made

    @staticmethod
    def _accepted(outcomes: Sequence[Mapping[str, Any]]) -> set[bytes]:
        refused = [o for o in outcomes if o.get("status") != "accepted"]
        if refused:
            raise AccordError(f"ingest quarantined the drill's synthetic records: {refused[0].get('reasons')}")
        return {source_of(o) for o in outcomes}

    @staticmethod
    def _sources(records: RecordChecks) -> list[bytes]:
        """The `accord.source` of every record on the drill body's delivery topic (one per delivery)."""
        return [headers.get("accord.source", b"") for _, headers in records.data.delivered(records.topic)]

    def _since(self, begun: float) -> float:
        return round(self.monotonic() - begun, 3)
