"""Console sign-in: a one-time link's token exchanged once for a server-side session, a CSRF token per session.

The cookie holds only a random session id (HttpOnly, SameSite=Strict, Secure over TLS); who the person is, their
CSRF token and when the session ends stay in this process. A link is refused a second time: the ids of exchanged
links are kept in a file (0600) until the link would have expired anyway, so a restart does not reopen them.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker.clock import Clock, system_clock
from broker.errors import AuthenticationError
from broker.security.api_tokens import Identity
from broker.security.secrets import write_private

SESSION_COOKIE = "accord_session"
SIGN_IN_COOKIE = "accord_sign_in"     # the sign-in form's CSRF token, before there is a session
SESSION_TTL = dt.timedelta(hours=8)


@dataclass(frozen=True)
class Session:
    identity: Identity
    csrf: str
    expires: dt.datetime


class UsedLinks:
    """Ids of the sign-in links already exchanged, each kept until its link's own expiry."""

    def __init__(self, path: Path, clock: Clock = system_clock) -> None:
        self._path, self._clock, self._lock = path, clock, threading.Lock()

    def claim(self, link_id: str, expires: dt.datetime) -> None:
        """Record `link_id` as used; AuthenticationError if it was used before."""
        with self._lock:
            used = self._read()
            if link_id in used:
                raise AuthenticationError("this sign-in link was used already; ask for a new one "
                                          "(`accord credentials token --link`)")
            now = self._clock().timestamp()
            used = {k: v for k, v in used.items() if v > now} | {link_id: expires.timestamp()}
            self._path.parent.mkdir(parents=True, exist_ok=True)
            write_private(self._path, json.dumps(used, sort_keys=True))

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            # Unreadable means we cannot tell which links were used: refuse them all rather than reopen any.
            raise AuthenticationError(f"{self._path} is damaged; sign-in links are refused until it is "
                                      "repaired or deleted") from None
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


class Sessions:
    """Signed-in people by session id; `verify_link` checks a link's token (signature, expiry, its use)."""

    def __init__(self, verify_link: Callable[[str], Identity], used: UsedLinks, clock: Clock = system_clock,
                 ttl: dt.timedelta = SESSION_TTL) -> None:
        self._verify, self._used, self._clock, self._ttl = verify_link, used, clock, ttl
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def exchange(self, link_token: str) -> tuple[str, Session]:
        """A new session for a sign-in link's token, which can never be exchanged again."""
        identity = self._verify(link_token)
        self._used.claim(identity.token_id, identity.expires)
        now = self._clock()
        session = Session(identity, secrets.token_urlsafe(32), now + self._ttl)
        ident = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now} | {ident: session}
        return ident, session

    def get(self, ident: str | None) -> Session | None:
        if not ident:
            return None
        with self._lock:
            session = self._sessions.get(ident)
        return session if session is not None and session.expires > self._clock() else None

    def end(self, ident: str | None) -> None:
        with self._lock:
            self._sessions.pop(ident or "", None)


def same_token(sent: str | None, expected: str) -> bool:
    """A CSRF token compared in constant time; a missing one never matches."""
    return bool(sent) and hmac.compare_digest(str(sent).encode(), expected.encode())
