"""Deployment secrets kept on disk (mode 0600) when the environment does not supply them."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

from broker.errors import ConfigError

SECRET_BYTES = 32


def write_private(path: Path, data: str | bytes, exclusive: bool = False) -> None:
    """Write `data` to `path`, readable by its owner only (0600), in a directory only the owner enters (0700).

    `exclusive`: create the file or raise FileExistsError, so services starting together agree on one secret.
    Otherwise the file is replaced whole through a staged copy: a reader sees the old secret or the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = path if exclusive else path.with_name(f".{path.name}.{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    if not exclusive:
        os.replace(target, path)


def pseudonym_secret(from_env: str | None, directory: Path) -> bytes:
    """The secret pseudonym keys derive from: ACCORD_PSEUDONYM_SECRET (hex) or `<dir>/pseudonym.key`.

    Every gate worker of a deployment must share it, or one person gets different pseudonyms from different
    workers; the file is created once, exclusively, so workers starting together still agree.
    """
    if from_env:
        try:
            secret = bytes.fromhex(from_env)
        except ValueError:
            raise ConfigError("ACCORD_PSEUDONYM_SECRET must be hex (e.g. `openssl rand -hex 32`)") from None
        if len(secret) < 16:
            raise ConfigError("ACCORD_PSEUDONYM_SECRET must be at least 16 bytes (32 hex digits)")
        return secret
    return _shared_secret(directory / "pseudonym.key")


PSEUDONYM_KEYS_DIR = "pseudonym-keys"


def pseudonym_master(directory: Path, version: int) -> bytes:
    """The master secret of pseudonym key `version` (2 and later: `<dir>/pseudonym-keys/v<version>.key`; version 1
    is `pseudonym_secret`). Kept after later rotations, so old pseudonyms can still be re-derived."""
    path = directory / PSEUDONYM_KEYS_DIR / f"v{version}.key"
    if not path.is_file():
        raise ConfigError(f"pseudonym key version {version} was announced but {path} does not exist; copy the "
                          "secrets directory `accord credentials rotate-pseudonym-key` wrote to every gate")
    return _read(path)


def new_pseudonym_master(directory: Path) -> int:
    """Make the master secret of the next pseudonym key version (2, 3, ...) and return its version."""
    folder = directory / PSEUDONYM_KEYS_DIR
    versions = [int(p.stem[1:]) for p in folder.glob("v*.key") if p.stem[1:].isdigit()] if folder.is_dir() else []
    version = max(versions, default=1) + 1
    write_private(folder / f"v{version}.key", secrets.token_hex(SECRET_BYTES), exclusive=True)
    return version


def webhook_secret(directory: Path) -> bytes:
    """The master secret each body's webhook signing secret derives from: `<dir>/webhook-signing.key`, made once.

    Losing it changes every body's secret: each body then registers its webhook again to be shown its new one."""
    return _shared_secret(directory / "webhook-signing.key")


def optout_secret(directory: Path) -> bytes:
    """The key the National Data Opt-out list is hashed with (`<dir>/optout.key`, made once): every gate worker and
    every `accord optout load` of a deployment must share it, or a loaded list would match no record's NHS number.
    Losing it means loading the list again; the plain numbers are never kept."""
    return _shared_secret(directory / "optout.key")


def cursor_secret(directory: Path) -> bytes:
    """The key the pull API signs its cursors with (`<dir>/cursor.key`); every API process shares it, so a cursor
    one issued is honoured by the next, and only they can make one."""
    return _shared_secret(directory / "cursor.key")


def _shared_secret(path: Path) -> bytes:
    with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
        write_private(path, secrets.token_hex(SECRET_BYTES), exclusive=True)
    return _read(path)


def _read(path: Path) -> bytes:
    text = path.read_text().strip()
    for _ in range(20):  # the worker that created the file may not have written it yet
        if text:
            break
        time.sleep(0.05)
        text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{path} does not hold a hex secret; delete it to make a new one") from None
    if len(secret) < 16:
        raise ConfigError(f"{path} holds a secret shorter than 16 bytes; delete it to make a new one")
    return secret
