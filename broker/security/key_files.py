"""Ed25519 key pairs on disk: the private key made once, exclusively, mode 0600; its public key 0644 beside it."""

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
)

from broker.errors import ConfigError
from broker.security.secrets import write_private


def ed25519_key(private: Path, public: Path, if_damaged: str) -> Ed25519PrivateKey:
    """The key in `private`, made on first use; its public key is written to `public`.

    The file is created exclusively, so services starting together end up with one key. `if_damaged` tells the
    operator what to do when the file is not a usable key (whether a new key may replace it depends on its use).
    """
    key = Ed25519PrivateKey.generate()
    try:
        write_private(private, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), exclusive=True)
    except FileExistsError:
        key = _read_private(private, if_damaged)
    _write_public(public, key.public_key())
    return key


def _read_private(path: Path, if_damaged: str) -> Ed25519PrivateKey:
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
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {if_damaged}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key: {if_damaged}")
    return key


def _write_public(path: Path, key: Ed25519PublicKey) -> None:
    """Write the public key unless it is already there; through a rename, so a reader never sees half a file."""
    pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    if path.exists() and path.read_bytes() == pem:
        return
    partial = path.parent / f".{path.name}.{os.getpid()}"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(partial, 0o644)  # the umask may have narrowed it, and verifiers elsewhere need to read it
    os.replace(partial, path)
