"""Console sign-in: a link's token is exchanged once for a session, never used as a bearer token, and a used link
stays used across a restart (broker/api/console/sessions.py, broker/security/api_tokens.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from broker.api.console.sessions import Sessions, UsedLinks, same_token
from broker.domain.audit import new_signing_key
from broker.errors import AuthenticationError
from broker.security.api_tokens import SIGN_IN, TokenVerifier, issue

NOW = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
KEY = new_signing_key()


def verifier(now: dt.datetime = NOW) -> TokenVerifier:
    return TokenVerifier(KEY.public_key, dict, lambda: now)


def link(ttl: dt.timedelta = dt.timedelta(minutes=15)) -> str:
    return issue(KEY, "leicester-city-council", "dph", "Director", ttl, NOW, use=SIGN_IN)


def test_a_link_is_exchanged_once_even_after_a_restart(tmp_path: Path) -> None:
    token = link()
    first = Sessions(verifier().verify_sign_in, UsedLinks(tmp_path / "used.json", lambda: NOW), lambda: NOW)
    ident, session = first.exchange(token)
    assert first.get(ident) == session and session.identity.person == "Director"
    with pytest.raises(AuthenticationError, match="used already"):
        first.exchange(token)
    restarted = Sessions(verifier().verify_sign_in, UsedLinks(tmp_path / "used.json", lambda: NOW), lambda: NOW)
    with pytest.raises(AuthenticationError, match="used already"):
        restarted.exchange(token)
    assert restarted.get(ident) is None          # sessions live in the process that made them


def test_a_link_is_no_bearer_token_and_a_bearer_token_is_no_link() -> None:
    with pytest.raises(AuthenticationError, match="never sent as a bearer token"):
        verifier().verify(link())
    bearer = issue(KEY, "leicester-city-council", "dph", "Director", dt.timedelta(hours=1), NOW)
    with pytest.raises(AuthenticationError, match="not a sign-in link"):
        verifier().verify_sign_in(bearer)
    assert verifier().verify(bearer).body == "leicester-city-council"


def test_an_expired_link_and_an_ended_session_are_refused(tmp_path: Path) -> None:
    later = NOW + dt.timedelta(minutes=16)
    with pytest.raises(AuthenticationError, match="expired"):
        verifier(later).verify_sign_in(link())
    clock = [NOW]
    sessions = Sessions(verifier().verify_sign_in, UsedLinks(tmp_path / "used.json"), lambda: clock[0],
                        ttl=dt.timedelta(hours=8))
    ident, _ = sessions.exchange(link())
    clock[0] = NOW + dt.timedelta(hours=8)
    assert sessions.get(ident) is None
    sessions.end(ident)


def test_csrf_tokens_compare_whole_and_never_empty() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abd", "abc") and not same_token("", "abc") and not same_token(None, "abc")
