"""The audit trail's Ed25519 signing key on disk: the private key (0600) and its public key beside it (0644)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from broker.errors import ConfigError

PRIVATE_KEY_FILE = "audit-signing.key"
PUBLIC_KEY_FILE = "audit-signing.pub"
# A new key would not match the checkpoints already signed, so a damaged key is never silently replaced.
_RESTORE = "restore it from a backup; a new key would not match the checkpoints already signed"


def public_key_path(directory: Path) -> Path:
    return directory / PUBLIC_KEY_FILE


def audit_signing_key(directory: Path) -> Ed25519PrivateKey:
    """The key in `<dir>/audit-signing.key`, made on first use; its public key is written beside it.

    The file is created exclusively, so services starting together end up with one key.
    """
    path = directory / PRIVATE_KEY_FILE
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = _read_private(path)
    else:
        key = Ed25519PrivateKey.generate()
        with os.fdopen(fd, "wb") as out:
            out.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    _write_public(directory, key.public_key())
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key PEM, e.g. the `audit-signing.pub` an operator was given."""
    try:
        key = load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"no audit public key at {path}: pass the one the signing service wrote") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 audit key")
    return key


def _read_private(path: Path) -> Ed25519PrivateKey:
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ConfigError(f"{path} can be read by other users: `chmod 600` it, and replace the key if it leaked")
    data = path.read_bytes()
    for _ in range(20):  # the service that created the file may not have written it yet
        if data:
            break
        time.sleep(0.05)
        data = path.read_bytes()
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # The parser's message may quote the file, so only the path is named.
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {_RESTORE}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key: {_RESTORE}")
    return key


def _write_public(directory: Path, key: Ed25519PublicKey) -> None:
    """Write the public key unless it is already there; through a rename, so a reader never sees half a file."""
    pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    path = public_key_path(directory)
    if path.exists() and path.read_bytes() == pem:
        return
    partial = directory / f".{PUBLIC_KEY_FILE}.{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(partial, 0o644)  # the umask may have narrowed it, and verifiers elsewhere need to read it
    os.replace(partial, path)
