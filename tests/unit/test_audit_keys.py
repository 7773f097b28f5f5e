"""The audit signing key on disk: made once and private, its public key readable beside it, never replaced."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from broker.domain.audit import Signer, key_id
from broker.errors import ConfigError
from broker.security.audit_keys import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    audit_signing_key,
    load_public_key,
    public_key_path,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_use_makes_a_private_key_and_a_readable_public_key(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    key = audit_signing_key(directory)
    assert _mode(directory / PRIVATE_KEY_FILE) == 0o600
    assert _mode(directory / PUBLIC_KEY_FILE) == 0o644
    assert key_id(load_public_key(public_key_path(directory))) == Signer(key).key_id


def test_later_uses_load_the_same_key(tmp_path: Path) -> None:
    first = audit_signing_key(tmp_path)
    assert Signer(audit_signing_key(tmp_path)).key_id == Signer(first).key_id


def test_a_lost_public_key_is_written_again(tmp_path: Path) -> None:
    key = audit_signing_key(tmp_path)
    public_key_path(tmp_path).unlink()
    audit_signing_key(tmp_path)
    assert key_id(load_public_key(public_key_path(tmp_path))) == Signer(key).key_id


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    audit_signing_key(tmp_path)
    (tmp_path / PRIVATE_KEY_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        audit_signing_key(tmp_path)


def test_a_damaged_key_is_not_replaced_and_its_content_is_not_shown(tmp_path: Path) -> None:
    path = tmp_path / PRIVATE_KEY_FILE
    path.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="restore it from a backup") as raised:
        audit_signing_key(tmp_path)
    assert "c2VjcmV0" not in str(raised.value)
    assert "c2VjcmV0" in path.read_text()


def test_a_key_of_another_algorithm_is_refused(tmp_path: Path) -> None:
    path = tmp_path / PRIVATE_KEY_FILE
    path.write_bytes(generate_private_key(SECP256R1()).private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                                       NoEncryption()))
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        audit_signing_key(tmp_path)


def test_a_missing_or_malformed_public_key_says_which_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no audit public key at .*nope\.pub"):
        load_public_key(tmp_path / "nope.pub")
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(ConfigError, match=r"bad\.pub is not a PEM public key"):
        load_public_key(tmp_path / "bad.pub")
