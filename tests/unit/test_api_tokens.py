"""API tokens: what a verified token says, and every way one is refused (expiry, key, issuer, revocation)."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import jwt
import pytest

from broker.errors import AuthenticationError, ConfigError
from broker.security import api_tokens

NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def _verifier(directory: Path, at: dt.datetime = NOW) -> api_tokens.TokenVerifier:
    return api_tokens.verifier_for(directory, clock=lambda: at)


def _issue(directory: Path, at: dt.datetime = NOW, ttl: dt.timedelta = dt.timedelta(hours=1)) -> str:
    return api_tokens.issue(api_tokens.signing_key(directory), "ukhsa", "ig-lead", "jo", ttl, at)


def test_a_token_names_body_role_and_person_until_it_expires(tmp_path: Path) -> None:
    issued = _issue(tmp_path)
    identity = _verifier(tmp_path).verify(issued)
    assert (identity.body, identity.role, identity.person) == ("ukhsa", "ig-lead", "jo")
    assert identity.expires == NOW + dt.timedelta(hours=1)
    with pytest.raises(AuthenticationError, match="expired"):
        _verifier(tmp_path, NOW + dt.timedelta(hours=1)).verify(issued)


def test_keys_and_revocations_are_private_files(tmp_path: Path) -> None:
    _issue(tmp_path)
    api_tokens.revoke(tmp_path, "ukhsa", NOW)
    for name in (api_tokens.SIGNING_KEY_FILE, api_tokens.REVOCATIONS_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    out = tmp_path / "token"
    api_tokens.write_token(out, "t")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_rotation_refuses_every_older_token(tmp_path: Path) -> None:
    issued = _issue(tmp_path)
    api_tokens.rotate_signing_key(tmp_path)
    with pytest.raises(AuthenticationError, match="rotated"):
        _verifier(tmp_path).verify(issued)
    assert _verifier(tmp_path).verify(_issue(tmp_path)).body == "ukhsa"


def test_revoking_a_body_refuses_its_earlier_tokens_only(tmp_path: Path) -> None:
    before = _issue(tmp_path, NOW)
    api_tokens.revoke(tmp_path, "ukhsa", NOW + dt.timedelta(seconds=0.5))
    with pytest.raises(AuthenticationError, match="revoked") as raised:
        _verifier(tmp_path).verify(before)
    assert before not in str(raised.value)
    later = _issue(tmp_path, NOW + dt.timedelta(seconds=1))
    assert _verifier(tmp_path).verify(later).body == "ukhsa"


def test_a_foreign_issuer_or_a_missing_claim_is_refused(tmp_path: Path) -> None:
    key = api_tokens.signing_key(tmp_path)
    claims = {"iss": "elsewhere", "sub": "ukhsa", "role": "ig-lead", "person": "jo", "iat": NOW,
              "exp": NOW + dt.timedelta(hours=1), "jti": "x"}
    with pytest.raises(AuthenticationError, match="not issued by accord"):
        _verifier(tmp_path).verify(jwt.encode(claims, key, algorithm="EdDSA"))
    del claims["person"]
    claims["iss"] = "accord"
    with pytest.raises(AuthenticationError, match="'person'"):
        _verifier(tmp_path).verify(jwt.encode(claims, key, algorithm="EdDSA"))


def test_a_service_without_a_key_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api-signing\.pub"):
        _verifier(tmp_path).verify("x.y.z")
