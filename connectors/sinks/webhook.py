"""The webhook sink: a delivery topic's records, decoded, POSTed as batches of JSON to the subscriber's endpoint,
signed, one batch in flight at a time, each retried with backoff until accepted or dead-lettered.

Every POST carries

    Accord-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>
    Accord-Delivery-Id: <topic>/<partition>/<first offset>-<last offset>

(the signing scheme of the governance webhooks, broker/domain/webhooks.py). A batch holds records of one partition,
in offset order, and the next batch is sent only once this one is accepted (2xx) or dead-lettered, so a key's
records arrive in order. 5xx, 408, 429 and no answer are retried; any other answer is final. A batch not accepted
after the last attempt goes into the dead letter (state directory) with its reason and attempts, and the position
moves past it. The position is stored after each batch, so a crash re-sends at most the batch in flight: delivery
is at least once, and the delivery id (or each record's topic, partition and offset) tells a repeat.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from broker.clock import Clock, system_clock
from broker.domain.webhooks import signature
from broker.errors import ConfigError, ServiceError
from broker.services.serde import SchemaRegistry
from connectors.sinks.base import Decoded, DeliverySource, Sink
from connectors.sinks.webhook_state import Attempt, DeadLetter, StateDirectory

SIGNATURE_HEADER = "Accord-Signature"
DELIVERY_HEADER = "Accord-Delivery-Id"
ATTEMPT_HEADER = "Accord-Attempt"
MIN_SECRET = 16


class Endpoint(Protocol):
    """The subscriber's HTTP endpoint (adapter: broker/adapters/webhook_http.py)."""

    def post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        """POST `body` (JSON); the HTTP status and the start of the answer's text. ServiceError: no answer."""


class Interrupted(ServiceError):
    """Stopped while a batch was being retried: it was not accepted, and is sent again at the next start."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    first_backoff_s: float = 0.5
    max_backoff_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (1-based): doubling, capped."""
        return min(self.first_backoff_s * 2.0 ** min(attempt - 1, 64), self.max_backoff_s)

    @staticmethod
    def retried(status: int | None) -> bool:
        """No answer, a server error, a timeout or too many requests may pass; another 4xx (or a 3xx: redirects
        are not followed) will not by trying again."""
        return status is None or status >= 500 or status in (408, 429)


def check_secret(secret: str, where: str) -> str:
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"the webhook secret in {where} has {len(secret)} characters; use at least {MIN_SECRET} "
                          "random ones (e.g. 64 hex digits), the same the receiver verifies with")
    return secret


def signed_headers(secret: str, delivery_id: str, body: bytes, now: float, attempt: int) -> dict[str, str]:
    """Signed anew on each attempt (a fresh timestamp), so a receiver can refuse stale replays."""
    return {SIGNATURE_HEADER: signature(secret, int(now), body), DELIVERY_HEADER: delivery_id,
            ATTEMPT_HEADER: str(attempt), "Content-Type": "application/json"}


def _plain(value: Any) -> Any:
    """Decoded Avro values JSON has no type for: dates and times as ISO 8601, decimals as strings, bytes base64."""
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON")


def encode(batch: Mapping[str, Any]) -> bytes:
    """The body's bytes; the same batch always encodes the same, so a dead letter is redelivered byte for byte."""
    return json.dumps(batch, default=_plain, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def delivery_id(topic: str, partition: int, first: int, last: int) -> str:
    return f"{topic}/{partition}/{first}-{last}"


def batch_body(topic: str, records: Sequence[Decoded]) -> dict[str, Any]:
    """One partition's records in offset order, as the JSON a receiver gets."""
    partition, first, last = records[0].partition, records[0].offset, records[-1].offset
    return {"delivery_id": delivery_id(topic, partition, first, last), "topic": topic, "partition": partition,
            "first_offset": first, "last_offset": last,
            "records": [{"offset": r.offset, "source": r.source, "schema_id": r.schema_id, "value": r.value}
                        for r in records]}


def batches(records: Sequence[Decoded], size: int) -> list[list[Decoded]]:
    """Per partition (in the order partitions first appear), runs of at most `size` records in offset order."""
    by_partition: dict[int, list[Decoded]] = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(record)
    return [group[i:i + size] for group in by_partition.values() for i in range(0, len(group), size)]


@dataclass
class Courier:
    """POSTs one batch at a time to `endpoint`, retrying by `policy`; `stop()` ends a retry at its next wait."""

    endpoint: Endpoint
    secret: str
    policy: RetryPolicy
    clock: Clock = system_clock
    wait: Callable[[float], object] = time.sleep
    stop: Callable[[], bool] = lambda: False
    on_warning: Callable[[str], None] = lambda message: None

    def send(self, batch_id: str, body: bytes, attempted: int = 0) -> list[Attempt]:
        """Attempts until one is accepted (then []) or the policy ends; the failed attempts, newest last."""
        failed: list[Attempt] = []
        for n in range(1, self.policy.max_attempts + 1):
            attempt = self._attempt(batch_id, body, attempted + n)
            if attempt is None:
                return []
            failed.append(attempt)
            if not self.policy.retried(attempt.status) or n == self.policy.max_attempts:
                break
            delay = self.policy.delay(n)
            self.on_warning(f"POST of {batch_id} failed ({attempt.error}); attempt {n + 1} of "
                            f"{self.policy.max_attempts} in {delay:g}s")
            self.wait(delay)
            if self.stop():
                raise Interrupted(f"stopped while retrying {batch_id} ({attempt.error}); it is sent again at the "
                                  "next start")
        return failed

    def _attempt(self, batch_id: str, body: bytes, number: int) -> Attempt | None:
        now = self.clock().timestamp()
        try:
            status, answer = self.endpoint.post(body, signed_headers(self.secret, batch_id, body, now, number))
        except ServiceError as exc:
            return Attempt(now, None, str(exc))
        if 200 <= status < 300:
            return None
        return Attempt(now, status, f"HTTP {status}" + (f": {answer}" if answer else ""))


class WebhookSink(Sink):
    """One delivery topic to one endpoint; positions and dead letters in `state`."""

    def __init__(self, source: DeliverySource, registry: SchemaRegistry, courier: Courier, state: StateDirectory,
                 batch: int = 100, **options: Any) -> None:
        super().__init__(source, registry, **options)
        self.courier, self.state, self.batch = courier, state, batch
        self._saved: dict[int, int] | None = None

    def stored_positions(self) -> dict[int, int]:
        self._saved = self.state.positions(self.topic)
        return dict(self._saved)

    def store(self, records: list[Decoded], positions: Mapping[int, int]) -> None:
        saved = self.stored_positions() if self._saved is None else self._saved
        for run in batches(records, self.batch):
            body = batch_body(self.topic, run)
            failed = self.courier.send(body["delivery_id"], encode(body))
            if failed:
                self._dead_letter(body, failed)
            saved = self._save({**saved, run[-1].partition: run[-1].offset + 1})
        if {**saved, **positions} != saved:
            self._save({**saved, **positions})  # past transaction markers and tombstones

    def rejected_count(self) -> int:
        """Records of this topic in the dead letter."""
        return sum(d.records for d in self.state.dead_letters() if d.topic == self.topic)

    def _save(self, positions: dict[int, int]) -> dict[int, int]:
        self.state.save_positions(self.topic, positions)
        self._saved = positions
        return positions

    def _dead_letter(self, body: Mapping[str, Any], failed: list[Attempt]) -> None:
        letter = DeadLetter(body["delivery_id"], self.topic, body["partition"], body["first_offset"],
                            body["last_offset"], failed[-1].error, tuple(failed), json.loads(encode(body)))
        self.state.put(letter)
        self.rejected += letter.records
        self.courier.on_warning(f"{letter.id} ({letter.records} records) is in the dead letter after "
                                f"{len(failed)} attempt(s): {letter.reason}; `accord connect redeliver` sends it again")


@dataclass(frozen=True)
class Redelivery:
    letter: DeadLetter
    accepted: bool
    error: str


def redeliver(state: StateDirectory, courier: Courier, ids: Sequence[str] | None = None) -> list[Redelivery]:
    """POST dead-lettered batches again (`ids`, else all, oldest first), each once: an accepted one leaves the dead
    letter; a refused one stays, with this attempt added."""
    letters = state.dead_letters() if ids is None else [state.dead_letter(i) for i in dict.fromkeys(ids)]
    once = replace(courier, policy=replace(courier.policy, max_attempts=1))
    done = []
    for letter in letters:
        failed = once.send(letter.id, encode(letter.batch), attempted=len(letter.attempts))
        if failed:
            state.put(replace(letter, reason=failed[-1].error, attempts=(*letter.attempts, *failed)))
        else:
            state.remove(letter.id)
        done.append(Redelivery(letter, not failed, failed[-1].error if failed else ""))
    return done
