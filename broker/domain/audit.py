"""Tamper-evident audit trail: a SHA-256 hash chain of entries, Ed25519-signed checkpoints, signed anchors of
checkpoints kept outside the chain, and the verifier.

Pure: times arrive as ISO 8601 UTC text; files, timers, key storage and the topics that hold the chain and its anchors
belong to the service and adapters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.errors import AuditError

CHECKPOINT = "checkpoint"
# An export asks the chain to sign right after the request, so every export ends with a signed checkpoint.
EXPORT = "audit-export"
GENESIS = "0" * 64
DEFAULT_INTERVAL = 100
KEY_ID_HEX_CHARS = 16
# An exported line's fields, in Entry's order.
_FIELD_TYPES: dict[str, type] = {"seq": int, "kind": str, "at": str, "body": dict, "prev": str, "hash": str}

ProblemKind = Literal[
    "tampered", "missing", "bad-signature", "unknown-key", "broken-link", "unsigned-tail", "truncated"
]


def canonical_json(value: Any) -> str:
    """`json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)`.

    NaN and infinities are refused because they are not JSON and other verifiers could not read them back.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(seq: int, kind: str, at: str, body: Mapping[str, Any], prev: str) -> str:
    """Hex SHA-256 of the UTF-8 bytes of `canonical_json({"seq", "kind", "at", "body", "prev"})`.

    For example `{"at":"2024-03-01T09:00:00Z","body":{"n":1},"kind":"delivery-batch","prev":"00…00","seq":0}`.
    """
    document = {"seq": seq, "kind": kind, "at": at, "body": body, "prev": prev}
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One link of the chain; `hash` covers every other field, and `prev` is the hash of the entry before."""

    seq: int
    kind: str
    at: str
    body: Mapping[str, Any]
    prev: str
    hash: str


def _seal(seq: int, kind: str, at: str, body: Mapping[str, Any], prev: str) -> Entry:
    try:
        # Keep the body as its JSON reads back (tuples become lists, keys strings), so an entry and its exported
        # line are equal and hash the same.
        plain = json.loads(canonical_json(body))
    except (TypeError, ValueError) as exc:
        raise AuditError(f"the body of a {kind!r} audit entry is not JSON: {exc}") from exc
    if not isinstance(plain, dict):
        raise AuditError(f"the body of a {kind!r} audit entry must be a JSON object, got {type(body).__name__}")
    return Entry(seq, kind, at, plain, prev, entry_hash(seq, kind, at, plain, prev))


def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex characters of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_CHARS]


def checkpoint_message(upto: int, head: str) -> bytes:
    """The bytes a checkpoint signs: `accord-audit-checkpoint\\n{upto}\\n{head}`."""
    return f"accord-audit-checkpoint\n{upto}\n{head}".encode()


def anchor_message(chain: str, seq: int, checkpoint_hash: str) -> bytes:
    """The bytes an anchor signs: `accord-audit-anchor\n{chain}\n{seq}\n{checkpoint_hash}`."""
    return f"accord-audit-anchor\n{chain}\n{seq}\n{checkpoint_hash}".encode()


@dataclass(frozen=True)
class Anchor:
    """Checkpoint `seq` of the chain on topic `chain` has hash `hash`: published where the chain's writer cannot
    rewrite it (the governance log), so a copy of the chain that stops at or before `seq` is known to be cut."""

    chain: str
    seq: int
    hash: str
    key_id: str
    signature: str


class Signer:
    """Signs checkpoints and anchors with one Ed25519 key, named by `key_id` so verifiers can pick the public key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, upto: int, head: str) -> str:
        """Base64 signature over `checkpoint_message(upto, head)`."""
        return base64.b64encode(self._private_key.sign(checkpoint_message(upto, head))).decode("ascii")

    def anchor(self, chain: str, checkpoint: Entry) -> Anchor:
        """A signed anchor of `checkpoint` (an entry of kind `checkpoint`) on the chain topic `chain`."""
        if checkpoint.kind != CHECKPOINT:
            raise ValueError(f"only checkpoints are anchored, not entry {checkpoint.seq} ({checkpoint.kind})")
        message = anchor_message(chain, checkpoint.seq, checkpoint.hash)
        signature = base64.b64encode(self._private_key.sign(message)).decode("ascii")
        return Anchor(chain, checkpoint.seq, checkpoint.hash, self.key_id, signature)


class Chain:
    """Appends entries, and signs a checkpoint after every `interval` entries, right after an export request, or
    whenever `checkpoint` is called."""

    def __init__(self, signer: Signer, *, interval: int = DEFAULT_INTERVAL) -> None:
        if interval < 1:
            raise ValueError(f"the checkpoint interval must be at least 1 entry, got {interval}")
        self._signer = signer
        self._interval = interval
        self._next_seq = 0
        self._head = GENESIS
        self._unsigned = 0

    @classmethod
    def resume(
        cls, last: Entry | None, signer: Signer, *, interval: int = DEFAULT_INTERVAL, unsigned: int = 0
    ) -> Chain:
        """Continue after `last` (None starts a new chain).

        `unsigned` is how many entries follow the last checkpoint (`Report.unsigned_tail` of the stored trail), so
        the count towards the next checkpoint survives a restart.
        """
        chain = cls(signer, interval=interval)
        if last is not None:
            chain._next_seq, chain._head = last.seq + 1, last.hash
        chain._unsigned = unsigned
        return chain

    @property
    def head(self) -> str:
        return self._head

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def append(self, kind: str, at: str, body: Mapping[str, Any]) -> list[Entry]:
        """Add one entry; returns what to write, in order: the entry, then a checkpoint if the interval is reached
        or the entry asks for an export."""
        if not kind or kind == CHECKPOINT:
            raise ValueError(f"audit entries need a kind other than {CHECKPOINT!r}, which only the chain writes")
        written = [self._add(kind, at, body)]
        self._unsigned += 1
        if self._unsigned >= self._interval or kind == EXPORT:
            written.append(self._sign(at))
        return written

    def checkpoint(self, at: str) -> Entry | None:
        """Sign the chain now (the service's timer); None when nothing was added since the last checkpoint."""
        # An idle trail would otherwise fill with checkpoints that only vouch for the checkpoint before them.
        return self._sign(at) if self._unsigned else None

    def _sign(self, at: str) -> Entry:
        upto, head = self._next_seq - 1, self._head
        body = {"upto": upto, "head": head, "key_id": self._signer.key_id, "signature": self._signer.sign(upto, head)}
        entry = self._add(CHECKPOINT, at, body)
        self._unsigned = 0
        return entry

    def _add(self, kind: str, at: str, body: Mapping[str, Any]) -> Entry:
        entry = _seal(self._next_seq, kind, at, body, self._head)
        self._next_seq, self._head = entry.seq + 1, entry.hash
        return entry


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with a trail: which entry, what kind of fault, and a sentence for the operator."""

    seq: int
    kind: ProblemKind
    message: str


@dataclass(frozen=True)
class Report:
    """What `verify` read; `unsigned_tail` counts entries after the last checkpoint, which no signature covers;
    `anchored` is the seq of the anchored checkpoint the trail was checked against, if any."""

    entries: int
    checkpoints: int
    unsigned_tail: int
    first_problem: Problem | None
    anchored: int | None = None

    @property
    def ok(self) -> bool:
        return self.first_problem is None


def verify(
    entries: Iterable[Entry],
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    require_checkpoint_tail: bool = False,
    anchor: Anchor | None = None,
) -> Report:
    """Check seq continuity from 0, prev links, hashes and checkpoint signatures; stop checking at the first problem.

    `public_keys` maps key ids to trusted keys. Entries after the last checkpoint could be cut off or rewritten
    unnoticed, so a trail that should end with a checkpoint (every export does) is checked with
    `require_checkpoint_tail`. A cut exactly at a checkpoint leaves a trail that is sound in itself: only `anchor`,
    the newest anchored checkpoint read from outside the trail, shows that entries are missing from its end.
    """
    walk = _Walk(public_keys)
    for entry in entries:
        walk.step(entry)
    problem = walk.problem
    if problem is None and anchor is not None:
        problem = walk.check_anchor(anchor)
    if problem is None and require_checkpoint_tail and walk.unsigned:
        first = walk.count - walk.unsigned
        problem = Problem(
            first,
            "unsigned-tail",
            f"entries {first} to {walk.count - 1} follow the last checkpoint and no signature covers them: "
            "the trail may have been cut short or its end rewritten",
        )
    return Report(walk.count, walk.checkpoints, walk.unsigned, problem, None if anchor is None else anchor.seq)


class _Walk:
    """Verifier state: everything before the current entry has been checked and found consecutive from seq 0."""

    def __init__(self, public_keys: Mapping[str, Ed25519PublicKey]) -> None:
        self._public_keys = public_keys
        # Checkpoints may vouch for any earlier entry, so every checked hash stays at hand.
        self._hashes: list[str] = []
        self.count = 0
        self.checkpoints = 0
        self.unsigned = 0
        self.problem: Problem | None = None

    def step(self, entry: Entry) -> None:
        self.count += 1
        if entry.kind == CHECKPOINT:
            self.checkpoints += 1
            self.unsigned = 0
        else:
            self.unsigned += 1
        if self.problem is None:
            self.problem = self._check(entry)
            self._hashes.append(entry.hash)

    def check_anchor(self, anchor: Anchor) -> Problem | None:
        """After a walk without problems: the anchored checkpoint is in the trail, unchanged."""
        where = f"the governance log's anchor of checkpoint {anchor.seq}"
        key = self._public_keys.get(anchor.key_id)
        if key is None:
            return Problem(anchor.seq, "unknown-key", f"{where} is signed by key {anchor.key_id}, which is not a "
                           "trusted audit key: add its public key if it is yours, otherwise the anchor is forged")
        if not _valid(key, anchor.signature, anchor_message(anchor.chain, anchor.seq, anchor.hash)):
            return Problem(anchor.seq, "bad-signature",
                           f"{where} has a signature that key {anchor.key_id} did not make: the anchor is forged")
        if anchor.seq >= self.count:
            missing = anchor.seq + 1 - self.count
            return Problem(self.count, "truncated",
                           f"the trail has {self.count} entries but the governance log anchors checkpoint "
                           f"{anchor.seq}: at least {missing} entries ({self.count} to {anchor.seq}) are missing "
                           "from its end. It was cut short, or exported before that anchor (export it again)")
        if self._hashes[anchor.seq] != anchor.hash:
            return Problem(anchor.seq, "tampered", f"entry {anchor.seq} is not the checkpoint of {where}: the trail "
                           f"was rewritten at or before entry {anchor.seq}")
        return None

    def _check(self, entry: Entry) -> Problem | None:
        return (
            self._check_seq(entry)
            or _check_hash(entry)
            or self._check_link(entry)
            or (self._check_checkpoint(entry) if entry.kind == CHECKPOINT else None)
        )

    def _check_seq(self, entry: Entry) -> Problem | None:
        expected = len(self._hashes)
        where = f"after entry {expected - 1}" if expected else "at the start"
        if entry.seq > expected:
            return Problem(
                expected, "missing", f"entry {expected} is missing or out of order: entry {entry.seq} comes {where}"
            )
        if entry.seq < expected:
            return Problem(
                expected,
                "broken-link",
                f"entry {entry.seq} appears again {where}, where entry {expected} belongs: entries are duplicated "
                "or out of order",
            )
        return None

    def _check_link(self, entry: Entry) -> Problem | None:
        prev = self._hashes[-1] if self._hashes else GENESIS
        if entry.prev == prev:
            return None
        if not self._hashes:
            return Problem(0, "broken-link", "entry 0 does not start a trail: its prev hash is not 64 zeros")
        return Problem(
            entry.seq,
            "broken-link",
            f"entry {entry.seq} does not follow entry {entry.seq - 1}: its prev hash differs from entry "
            f"{entry.seq - 1}'s hash, so an earlier entry was rewritten or this one was inserted",
        )

    def _check_checkpoint(self, entry: Entry) -> Problem | None:
        fields = _checkpoint_fields(entry.body)
        if fields is None:
            return Problem(
                entry.seq,
                "bad-signature",
                f"checkpoint {entry.seq} is malformed: its body needs upto (int), head, key_id and signature (text)",
            )
        upto, head, signer, signature = fields
        key = self._public_keys.get(signer)
        if key is None:
            return Problem(
                entry.seq,
                "unknown-key",
                f"checkpoint {entry.seq} is signed by key {signer}, which is not a trusted audit key: add its public "
                "key if it is yours, otherwise treat the trail as forged",
            )
        if not _signature_valid(key, signature, upto, head):
            return Problem(
                entry.seq, "bad-signature", f"checkpoint {entry.seq} has a signature that key {signer} did not make"
            )
        return self._check_head(entry.seq, upto, head)

    def _check_head(self, seq: int, upto: int, head: str) -> Problem | None:
        if not 0 <= upto < len(self._hashes):
            return Problem(seq, "tampered", f"checkpoint {seq} vouches for entry {upto}, which does not precede it")
        if self._hashes[upto] != head:
            return Problem(
                seq,
                "tampered",
                f"checkpoint {seq} vouches for a different entry {upto}: entries up to {upto} were rewritten after "
                "it was signed",
            )
        return None


def _check_hash(entry: Entry) -> Problem | None:
    altered = f"entry {entry.seq} was altered"
    try:
        recomputed = entry_hash(entry.seq, entry.kind, entry.at, entry.body, entry.prev)
    except (TypeError, ValueError):
        return Problem(entry.seq, "tampered", f"{altered}: its body is not JSON")
    if recomputed != entry.hash:
        return Problem(entry.seq, "tampered", f"{altered}: its hash does not match its content")
    return None


def _checkpoint_fields(body: Mapping[str, Any]) -> tuple[int, str, str, str] | None:
    upto, head, signer, signature = (body.get(name) for name in ("upto", "head", "key_id", "signature"))
    if isinstance(upto, bool) or not isinstance(upto, int):
        return None
    if not (isinstance(head, str) and isinstance(signer, str) and isinstance(signature, str)):
        return None
    return upto, head, signer, signature


def _signature_valid(key: Ed25519PublicKey, signature: str, upto: int, head: str) -> bool:
    return _valid(key, signature, checkpoint_message(upto, head))


def _valid(key: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), message)
    except (binascii.Error, InvalidSignature):
        return False
    return True


def to_json_line(entry: Entry) -> str:
    """The entry as one line of canonical JSON, without the newline.

    Read such files by iterating over lines, not with `str.splitlines`, which also splits at U+2028 and friends
    that `ensure_ascii=False` leaves unescaped inside strings.
    """
    return canonical_json({name: getattr(entry, name) for name in _FIELD_TYPES})


def from_json_line(line: str, line_no: int) -> Entry:
    """Parse one exported line; raises AuditError naming `line_no` when it is not an entry."""
    try:
        data = json.loads(line, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise AuditError(f"audit line {line_no}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise AuditError(f"audit line {line_no}: expected a JSON object, got {type(data).__name__}")
    _check_fields(data, line_no)
    return Entry(data["seq"], data["kind"], data["at"], data["body"], data["prev"], data["hash"])


def _check_fields(data: dict[str, Any], line_no: int) -> None:
    missing = [name for name in _FIELD_TYPES if name not in data]
    unexpected = sorted(set(data) - set(_FIELD_TYPES))
    if missing or unexpected:
        raise AuditError(
            f"audit line {line_no}: fields must be exactly {', '.join(_FIELD_TYPES)}"
            f" (missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(unexpected) or 'none'})"
        )
    for name, expected in _FIELD_TYPES.items():
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise AuditError(
                f"audit line {line_no}: field {name!r} must be {expected.__name__}, got {type(value).__name__}"
            )
    if data["seq"] < 0:
        raise AuditError(f"audit line {line_no}: field 'seq' must not be negative, got {data['seq']}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
