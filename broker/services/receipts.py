"""Taking a subscriber's delivery receipt (`POST /deliveries/{stream}/receipts`): check that the topic is the
caller's own, that the key is one its body registered and has not retired, that the signature verifies, and that
the records actually committed in that range hash to what the receipt says; then put it on the audit trail.

Every refusal is a ReceiptError with the HTTP status to answer (never a 500): 400 not a range or one of more than
MAX_RANGE offsets, 403 another body's (or role's) topic, 422 an unknown, retired or foreign key or a signature
that does not verify, 416 a range beyond what was delivered, 409 records that hash to something else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from broker.clock import Clock
from broker.domain.disputes import stamp
from broker.domain.messages import Record
from broker.domain.receipt_ledger import ReceiptKey
from broker.domain.receipts import (
    MAX_RANGE,
    Claim,
    ReceiptError,
    parse_public_key,
    range_digest,
    receipt_record,
    signature_valid,
)
from broker.domain.topics import delivery_topic
from broker.services.deliveries import DeliveryLog

READ_STEP = 5_000


class ReceiptKeys(Protocol):
    """The receipt keys bodies registered with the governance service (from the governance log)."""

    def get(self, key_id: str) -> ReceiptKey | None:
        """The key with this id as registered now (retired ones included); None if never registered."""


class ReceiptAudit(Protocol):
    def append(self, record: Mapping[str, Any]) -> None:
        """Put an accepted receipt on the audit topic, durably; ServiceError if it cannot."""


class DeliveryReceipts:
    def __init__(self, log: DeliveryLog, keys: ReceiptKeys, audit: ReceiptAudit, clock: Clock,
                 count: Callable[[str], None] = lambda outcome: None) -> None:
        self._log, self._keys, self._audit, self._clock, self._count = log, keys, audit, clock, count

    def accept(self, actor: Mapping[str, str], stream: str, claim: Claim, signature: str) -> dict[str, Any]:
        """The audit record of the accepted receipt; ReceiptError (with its status) when it is refused."""
        try:
            record = self._accepted(actor, stream, claim, signature)
        except ReceiptError as exc:
            self._count(str(exc.status))
            raise
        self._count("accepted")
        return record

    def _accepted(self, actor: Mapping[str, str], stream: str, claim: Claim, signature: str) -> dict[str, Any]:
        own = delivery_topic(actor["body"], actor["role"], stream)
        if claim.topic != own:
            raise ReceiptError(403, f"{actor['body']} as {actor['role']} acknowledges only its own delivery topic of "
                                    f"{stream}, {own}; not {claim.topic}")
        self._check_key(actor["body"], claim, signature)
        records = self._committed(claim)
        digest = range_digest(records)
        if digest != claim.records_digest:
            raise ReceiptError(409, f"the {len(records)} records at {claim.topic}/{claim.partition} offsets "
                                    f"{claim.first_offset}-{claim.last_offset} hash to {digest}, not "
                                    f"{claim.records_digest}: the receipt is not for what was delivered")
        record = receipt_record(claim, signature, len(records), actor, stamp(self._clock()))
        self._audit.append(record)
        return record

    def _check_key(self, body: str, claim: Claim, signature: str) -> None:
        key = self._keys.get(claim.key_id)
        if key is None or key.body != body:
            raise ReceiptError(422, f"{body} has no receipt key {claim.key_id!r}; register one with "
                                    "`accord credentials receipt-key --register`")
        if not key.active:
            raise ReceiptError(422, f"receipt key {claim.key_id} of {body} was retired at {key.retired_at}; sign "
                                    "with an active key")
        if not signature_valid(parse_public_key(key.public_key), claim, signature):
            raise ReceiptError(422, f"the signature does not verify with {body}'s receipt key {claim.key_id} over "
                                    "the receipt's canonical form (see docs/security.md)")

    def _committed(self, claim: Claim) -> list[Record]:
        """The committed records of the claimed range, read as they are on the delivery topic."""
        if claim.first_offset < 0 or claim.last_offset < claim.first_offset:
            raise ReceiptError(400, f"offsets {claim.first_offset}-{claim.last_offset} are not a range")
        if claim.last_offset - claim.first_offset >= MAX_RANGE:
            raise ReceiptError(400, f"a receipt covers at most {MAX_RANGE:,} offsets; split "
                                    f"{claim.first_offset}-{claim.last_offset} into several")
        partitions = self._log.partitions(claim.topic)
        if partitions is None or claim.partition not in partitions:
            raise ReceiptError(416, f"nothing was delivered to {claim.topic} partition {claim.partition}")
        ends = self._log.ends(claim.topic)
        end = ends.get(claim.partition, 0)
        if claim.last_offset >= end:
            raise ReceiptError(416, f"offset {claim.last_offset} is beyond what was delivered to {claim.topic}/"
                                    f"{claim.partition} (its committed records end before offset {end})")
        found: list[Record] = []
        position = claim.first_offset
        while position <= claim.last_offset:
            # Other partitions are read from their ends, so the page is this partition's (bar records that landed
            # there since: the ends are asked again until this partition's records come).
            raw = self._log.read(claim.topic, {**ends, claim.partition: position}, READ_STEP, 0.0)
            mine = [r for r in raw if r.partition == claim.partition]
            if not raw:
                break
            if not mine:
                ends = {**self._log.ends(claim.topic), claim.partition: position}
                continue
            found.extend(r for r in mine if r.offset <= claim.last_offset)
            position = max(r.offset for r in mine) + 1
        return found
