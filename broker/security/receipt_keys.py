"""A subscribing body's receipt key pair on disk: made locally (the private key never leaves the body), named after
its fingerprint, the private key 0600 and the public key 0644 beside it."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from broker.domain.receipts import fingerprint
from broker.errors import ConfigError
from broker.security.key_files import _read_private, _write_public
from broker.security.secrets import write_private

IF_DAMAGED = "make a new pair with `accord credentials receipt-key` and register it"


def make_receipt_key(directory: Path, body: str) -> tuple[Ed25519PrivateKey, Path, Path]:
    """A new key pair in `directory`: `<body>-receipt-<key id>.key` (0600) and `.pub`."""
    key = Ed25519PrivateKey.generate()
    ident = fingerprint(key.public_key())
    try:
        directory.mkdir(parents=True, exist_ok=True)
        private = directory / f"{body}-receipt-{ident}.key"
        write_private(private, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), exclusive=True)
        public = private.with_suffix(".pub")
        _write_public(public, key.public_key())
    except OSError as exc:
        raise ConfigError(f"cannot write the receipt key into {directory}: {exc}") from exc
    return key, private, public


def load_receipt_key(path: Path) -> Ed25519PrivateKey:
    """The private key in `path` (refused if other users can read it)."""
    try:
        return _read_private(path, IF_DAMAGED)
    except OSError as exc:
        raise ConfigError(f"cannot read the receipt key {path}: {exc.strerror}") from exc
