"""The control-signing key: the governance service signs every control record with it, gates verify with its public
key. On disk in the secrets directory, `control-signing.key` (0600) and `control-signing.pub` (0644) beside it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.domain.audit import key_id
from broker.domain.control_signing import Signature, sign
from broker.domain.topics import CONTROL_TOPIC
from broker.errors import ConfigError
from broker.security.audit_keys import load_public_key
from broker.security.key_files import ed25519_key

PRIVATE_KEY_FILE = "control-signing.key"
PUBLIC_KEY_FILE = "control-signing.pub"
# Gates verify every record on the topic, old ones too: a new key would leave them none they trust.
_RESTORE = ("restore it from a backup; a new key makes every control record signed so far untrusted, so after "
            "replacing it apply the catalog again and announce revocations again")


def public_key_path(secrets_dir: Path) -> Path:
    return secrets_dir / PUBLIC_KEY_FILE


def control_signing_key(secrets_dir: Path) -> Ed25519PrivateKey:
    """The key in `<secrets>/control-signing.key`, made on first use; its public key is written beside it."""
    return ed25519_key(secrets_dir / PRIVATE_KEY_FILE, public_key_path(secrets_dir), _RESTORE)


class ControlSigner:
    """Signs control records for one topic; each record's signed-at (microseconds) is later than the one before,
    even within one microsecond or when the wall clock steps back, so a gate can tell a replay from a change."""

    def __init__(self, private_key: Ed25519PrivateKey, topic: str = CONTROL_TOPIC,
                 now_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self.topic = topic
        self.key_id = key_id(private_key.public_key())
        self._key, self._now_us = private_key, now_us
        self._last = 0
        self._lock = threading.Lock()

    def sign(self, key: str, value: bytes | None) -> Signature:
        with self._lock:
            self._last = max(self._last + 1, self._now_us())
            signed_at = self._last
        return sign(self._key, self.topic, key, value, signed_at)


class TrustedControlKeys:
    """The control public key in a file, looked up by key id. The file is read again when a record names another
    key, so a gate started before the signer made its key (or after a rotation) trusts it without a restart."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._lock = threading.Lock()

    def __call__(self, ident: str) -> Ed25519PublicKey | None:
        with self._lock:
            if ident not in self._keys:
                self._reload()
            return self._keys.get(ident)

    def _reload(self) -> None:
        if not self._path.exists():
            return
        try:
            public = load_public_key(self._path)
        except ConfigError:
            return  # half written or damaged: nothing new is trusted (the refusal is logged and counted)
        self._keys[key_id(public)] = public


def trusted_keys(secrets_dir: Path, public_key_file: Path | None = None) -> TrustedControlKeys:
    """The keys a gate trusts: `public_key_file` when given (a gate on another host), else the secrets dir's."""
    return TrustedControlKeys(public_key_file or public_key_path(secrets_dir))
