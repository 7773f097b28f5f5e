"""In-memory fakes for drills: the deployment a drill's records reach (services/drill_streams.DrillData), with a fake
gate that delivers each published record as a test says, or as the grants on a fake control topic say."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from broker.domain.ladder import Actor
from broker.domain.topics import delivered_stream, delivery_topic
from broker.domain.transforms import age_band
from broker.services.drill_streams import expected_view, granted
from tests.unit.governance_fakes import FakeControl

Row = dict[str, Any]
DRILL_BODY = "drill-abc123-t1"
CONTROL_EPOCH_MS = 1_700_000_000_000     # FakeControl's timestamp of its record at offset 0


def analyst_view(record: Row) -> Row:
    """What T1's analyst tier makes of a row: LSOA, age band at the specimen date, sex."""
    return {"lsoa": record["lsoa"], "sex": record["sex"],
            "age_band": age_band(dt.date.fromisoformat(record["dob"]),
                                 dt.date.fromisoformat(record["specimen_date"]))}


class FakeData:
    """The registry, ingest API, delivery topics and gate status of a deployment, with a gate that delivers each
    published record as `gate` says (None: not delivered) until a revocation is applied, or after it too when it
    `ignores_revocations`."""

    def __init__(self, gate: Callable[[Row], Row | None], ignores_revocations: bool = False) -> None:
        self.gate, self.ignores_revocations = gate, ignores_revocations
        self.registered: list[tuple[str, Mapping[str, Any]]] = []
        self.publishers: list[Actor] = []
        self.deliveries: dict[str, list[tuple[Row, dict[str, bytes]]]] = {}
        self.revoked, self.offset = False, 0
        self.logins: set[tuple[str, str]] = set()

    def stream_schema(self, catalog: Mapping[str, Any], stream: str) -> dict[str, Any]:
        return {"type": "record", "name": "PositiveTest", "fields": [], "accord.stream": stream}

    def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        self.registered.append((subject, schema))
        return 41

    def synthetic(self, stream: str, area: str, upper_tier: str, count: int, prefix: str, seed: int,
                  avoiding: Sequence[str] = ()) -> list[Row] | None:
        return [{"specimen_id": f"{prefix}-{n}", "lsoa": f"{area}-lsoa", "utla": upper_tier, "ltla": area,
                 "dob": "1990-05-01", "sex": "FEMALE", "specimen_date": "2026-03-01"} for n in range(count)]

    def publish(self, stream: str, publisher: Actor, records: Sequence[Row]) -> list[dict[str, Any]]:
        self.publishers.append(publisher)
        outcomes = []
        for index, record in enumerate(records):
            self.offset += 1
            source = f"ingest.{stream}/0/{self.offset}"
            row = None if self.revoked and not self.ignores_revocations else self.gate(record)
            if row is not None:
                self.deliveries.setdefault(stream, []).append((row, {"accord.source": source.encode()}))
            outcomes.append({"index": index, "status": "accepted", "topic": f"ingest.{stream}", "partition": 0,
                             "offset": self.offset})
        return outcomes

    def login(self, subscriber: str, role: str) -> str:
        self.logins.add((subscriber, role))
        return f"its own login {subscriber}.{role}"

    def retire_login(self, subscriber: str, role: str) -> None:
        self.logins.remove((subscriber, role))

    def delivered(self, topic: str, reader: tuple[str, str] | None = None) -> list[tuple[Row, dict[str, bytes]]]:
        """The drill body's analysts' topic: the role the template's minimised tier is for."""
        stream = delivered_stream(topic) or ""
        return list(self.deliveries.get(stream, [])) if topic == delivery_topic(DRILL_BODY, "analyst", stream) else []

    def gate_behind(self, stream: str) -> int | None:
        return 0

    def enforced_at_ms(self, control_offset: int, timeout_s: float) -> int | None:
        self.revoked = True
        return 1_700_000_000_250

    def control_end(self) -> int:
        return 0

    def control_written(self, key: str, since: int, timeout_s: float) -> dict[str, int] | None:
        return None     # no control topic here: GrantGate has one


class GrantGate(FakeData):
    """A gate that delivers as the grants on a fake control topic say: each published record of a grant's areas to
    its subscriber's role topic, with the fields the grant gives; applied `delay_ms` after a control record is
    written (None: never). With `keeps_ended` it goes on delivering under grants that ended (a gate that misses
    withdrawals)."""

    def __init__(self, control: FakeControl, stream_fields: Mapping[str, Any], delay_ms: int | None = 250,
                 keeps_ended: bool = False) -> None:
        super().__init__(lambda _: None)
        self.control, self.fields, self.delay_ms, self.keeps_ended = control, dict(stream_fields), delay_ms, keeps_ended
        self.seen: dict[str, Mapping[str, Any]] = {}
        self.topics: dict[str, list[tuple[Row, dict[str, bytes]]]] = {}

    def publish(self, stream: str, publisher: Actor, records: Sequence[Row]) -> list[dict[str, Any]]:
        self.publishers.append(publisher)
        current = dict(self.control.current().grants)
        self.seen.update(current)
        grants = [g for g in (self.seen if self.keeps_ended else current).values() if g["stream"] == stream]
        outcomes = []
        for index, record in enumerate(records):
            self.offset += 1
            source = f"ingest.{stream}/0/{self.offset}"
            for grant in grants:
                if record["ltla"] in grant["row_scope"]["areas"]:
                    tier = grant["tiers"][0]
                    row = expected_view(granted(tier, self.fields), sorted(self.fields), record)
                    topic = delivery_topic(grant["subscriber"], tier["roles"][0], stream)
                    self.topics.setdefault(topic, []).append((row, {"accord.source": source.encode()}))
            outcomes.append({"index": index, "status": "accepted", "topic": f"ingest.{stream}", "partition": 0,
                             "offset": self.offset})
        return outcomes

    def delivered(self, topic: str, reader: tuple[str, str] | None = None) -> list[tuple[Row, dict[str, bytes]]]:
        return list(self.topics.get(topic, []))

    def enforced_at_ms(self, control_offset: int, timeout_s: float) -> int | None:
        return None if self.delay_ms is None else CONTROL_EPOCH_MS + control_offset + self.delay_ms

    def control_end(self) -> int:
        return len(self.control.records)

    def control_written(self, key: str, since: int, timeout_s: float) -> dict[str, int] | None:
        return next(({"offset": offset, "timestamp_ms": CONTROL_EPOCH_MS + offset}
                     for offset, (written, _) in enumerate(self.control.records)
                     if offset >= since and written == key), None)
