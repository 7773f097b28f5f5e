"""Signed drill reports: the JSON report, the digests of its Markdown and HTML renderings, and an Ed25519 signature
by the audit key over the digest of both, so `accord drill verify` names any file altered after signing.

The signed file (`report.json`):

    {"report": {...}, "renderings": {"report.md": "<sha256>", "report.html": "<sha256>"},
     "signature": {"algorithm": "ed25519", "key_id": "<16 hex>", "digest": "<sha256>", "value": "<base64>"}}

`digest` is the hex SHA-256 of `canonical_json({"renderings": ..., "report": ...})` and the signature covers
`accord-drill-report\\n<digest>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.domain.audit import canonical_json, key_id
from broker.domain.drills import DRILL_REPORTED

ALGORITHM = "ed25519"


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def report_digest(report: Mapping[str, Any], renderings: Mapping[str, str]) -> str:
    """The digest a signature covers: the report's JSON and its renderings' digests together."""
    document = {"report": report, "renderings": dict(renderings)}
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def message(digest: str) -> bytes:
    return f"accord-drill-report\n{digest}".encode()


def sign(report: Mapping[str, Any], renderings: Mapping[str, bytes], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The signed document for `report` (its JSON) and the bytes of each rendering, by file name."""
    digests = {name: file_digest(data) for name, data in sorted(renderings.items())}
    digest = report_digest(report, digests)
    value = base64.b64encode(key.sign(message(digest))).decode("ascii")
    return {"report": dict(report), "renderings": digests,
            "signature": {"algorithm": ALGORITHM, "key_id": key_id(key.public_key()), "digest": digest,
                          "value": value}}


def problems(document: Any, renderings: Mapping[str, bytes | None], keys: Mapping[str, Ed25519PublicKey],
             name: str = "report.json") -> list[str]:
    """What is wrong with a signed report, one sentence each; empty when it verifies.

    `renderings` holds the bytes of each rendering the document names, read from beside it (None: not found);
    `keys` the trusted audit public keys by key id. `name` is how the signed file is named in the sentences.
    """
    if not isinstance(document, dict) or not all(k in document for k in ("report", "renderings", "signature")):
        return [f"{name} is not a signed drill report (it needs report, renderings and signature)"]
    signature, digests = document["signature"], document["renderings"]
    if not isinstance(signature, dict) or not isinstance(digests, dict):
        return [f"{name} is not a signed drill report (signature and renderings must be objects)"]
    found = []
    key = keys.get(str(signature.get("key_id")))
    if key is None:
        found.append(f"{name} is signed with key {signature.get('key_id')!r}, which is not a trusted audit key "
                     f"(trusted: {', '.join(sorted(keys)) or 'none'})")
    elif report_digest(document["report"], digests) != signature.get("digest"):
        found.append(f"{name} was altered after signing: its contents do not match the signed digest")
    elif not _valid(key, str(signature.get("digest")), signature.get("value")):
        found.append(f"{name} has a signature that does not verify with audit key {signature.get('key_id')}")
    for file, expected in sorted(digests.items()):
        data = renderings.get(file)
        if data is None:
            found.append(f"{file} is missing: it should sit beside {name}")
        elif file_digest(data) != expected:
            found.append(f"{file} was altered after signing: its digest does not match the one {name} signed")
    return found


def _valid(key: Ed25519PublicKey, digest: str, value: Any) -> bool:
    try:
        key.verify(base64.b64decode(str(value), validate=True), message(digest))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def chain_problems(document: Mapping[str, Any], events: Iterable[Any]) -> list[str]:
    """Whether the audit chain's events (governance events, as chained) record this signed report's digest."""
    run = str((document.get("report") or {}).get("run"))
    digest = str((document.get("signature") or {}).get("digest"))
    recorded = [str(e["data"].get("digest")) for e in events
                if isinstance(e, dict) and e.get("type") == DRILL_REPORTED and isinstance(e.get("data"), dict)
                and e["data"].get("run") == run]
    if not recorded:
        return [f"the audit chain has no record of drill report {run}: it was never recorded there, or this is "
                "another deployment's chain"]
    if digest not in recorded:
        return [f"report.json is not the report the audit chain recorded for {run} (recorded digest "
                f"{recorded[-1][:16]}..., this one {digest[:16]}...)"]
    return []
