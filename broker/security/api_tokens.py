"""API credentials: Ed25519-signed bearer tokens (JWT, alg EdDSA) naming a body, one of its roles and a person.

Why signed tokens rather than mTLS client certificates: every service (API, governance, registry, gate) verifies a
token statelessly with one public key, so no CA, certificate chain or TLS client set-up has to reach every
council's scripts and tools; a short expiry bounds what a leaked token is worth; and rotation is one command (a new
signing key invalidates every older token) or, for one body, a revocation time before which its tokens are refused.

On disk, in the secrets directory: `api-signing.key` (0600) and `api-signing.pub` beside it, and
`api-revoked-before.json` (0600), body id -> Unix time. Tokens and keys are never logged nor put in an error.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from jwt.types import Options

from broker.clock import Clock, system_clock
from broker.domain.ladder import Actor
from broker.errors import AuthenticationError, ConfigError
from broker.security.audit_keys import load_public_key
from broker.security.key_files import ed25519_key
from broker.security.secrets import write_private

ISSUER = "accord"
ALGORITHM = "EdDSA"
SIGNING_KEY_FILE = "api-signing.key"
PUBLIC_KEY_FILE = "api-signing.pub"
REVOCATIONS_FILE = "api-revoked-before.json"
REQUIRED_CLAIMS = ("sub", "role", "person", "iat", "exp", "jti", "iss")
# Accord's own services call each other as this identity; it is not a catalog body and decides nothing.
SERVICE_BODY, SERVICE_ROLE = "accord", "service"
# The people who run Accord act as body `accord` in this role; policies/authz lets it apply the catalog, nothing else.
OPERATOR_ROLE = "operator"
DEFAULT_TTL = dt.timedelta(hours=8)
# A one-time console sign-in link carries a token with this `use`: the console exchanges it once for a session, and
# no API takes it as a bearer token (a link may linger in a browser's history or a mail archive).
SIGN_IN = "console-sign-in"
SIGN_IN_TTL = dt.timedelta(minutes=15)
MAX_TTL = dt.timedelta(days=30)
# A new key only makes callers ask for new tokens, so a damaged one may be replaced.
_REPLACE = "run `accord credentials rotate-signing-key` to make a new one (every token must then be issued again)"



@dataclass(frozen=True)
class Identity:
    """Who a verified token says is calling."""

    body: str
    role: str
    person: str
    token_id: str
    expires: dt.datetime

    @property
    def actor(self) -> Actor:
        return Actor(body=self.body, role=self.role, person=self.person)

    def to_json(self) -> dict[str, str]:
        return {"body": self.body, "role": self.role, "person": self.person}


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of the public key, carried as the token's `kid` so a rotated key is named as such."""
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def issue(key: Ed25519PrivateKey, body: str, role: str, person: str, ttl: dt.timedelta, now: dt.datetime,
          use: str | None = None) -> str:
    """A token for `person` acting for `body` as `role`, valid from `now` for `ttl`; `use` SIGN_IN for a sign-in
    link's token, which only the console's exchange accepts."""
    if not (body and role and person):
        raise AuthenticationError("a token needs a body, a role and a person, none of them empty")
    if not dt.timedelta(0) < ttl <= MAX_TTL:
        raise ConfigError(f"a token's lifetime must be more than 0 and at most {MAX_TTL.days} days, not {ttl}")
    claims = {"iss": ISSUER, "sub": body, "role": role, "person": person, "iat": now, "exp": now + ttl,
              "jti": uuid.uuid4().hex}
    if use is not None:
        claims["use"] = use
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": key_id(key.public_key())})


@dataclass(frozen=True)
class TokenVerifier:
    """Checks a token against the current public key and the per-body revocations, both read on every call, so a
    rotation or revocation takes effect without restarting the service."""

    public_key: Callable[[], Ed25519PublicKey]
    revoked_before: Callable[[], Mapping[str, int]]
    clock: Clock

    def verify(self, token: str) -> Identity:
        """The Identity of a bearer token; AuthenticationError for anything else, a sign-in link's token included."""
        return self._verified(token, None)

    def verify_sign_in(self, token: str) -> Identity:
        """The Identity of a sign-in link's token (the console's exchange); a bearer token is refused here."""
        return self._verified(token, SIGN_IN)

    def _verified(self, token: str, use: str | None) -> Identity:
        public = self.public_key()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthenticationError("the bearer token is not a JWT") from None
        if header.get("kid") not in (None, key_id(public)):
            raise AuthenticationError("the token was signed by a key that is no longer Accord's (it was rotated); "
                                      "ask for a new token")
        claims = self._claims(token, public)
        if claims.get("use") != use:
            raise AuthenticationError("a sign-in link's token is exchanged once at the console, never sent as a "
                                      "bearer token" if use is None else "this is not a sign-in link's token")
        body = str(claims["sub"])
        revoked = self.revoked_before().get(body)
        if revoked is not None and int(claims["iat"]) < revoked:
            raise AuthenticationError(f"tokens of {body} issued before {_stamp(revoked)} were revoked; "
                                      "ask for a new token")
        return Identity(body=body, role=str(claims["role"]), person=str(claims["person"]),
                        token_id=str(claims["jti"]), expires=dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC))

    def _claims(self, token: str, public: Ed25519PublicKey) -> dict[str, Any]:
        now = self.clock()
        # Expiry is checked below against the injected clock, so tests and services agree on what "now" is.
        options: Options = {"require": list(REQUIRED_CLAIMS), "verify_iat": False, "verify_exp": False}
        try:
            claims: dict[str, Any] = jwt.decode(token, public, algorithms=[ALGORITHM], issuer=ISSUER, options=options)
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError(f"the token was not issued by {ISSUER}") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("the token's signature does not verify with Accord's key") from None
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(f"the token is invalid ({type(exc).__name__})") from None
        for name in ("sub", "role", "person", "jti"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise AuthenticationError(f"the token's {name!r} claim is not a non-empty string")
        for name in ("iat", "exp"):
            if not isinstance(claims[name], int | float):
                raise AuthenticationError(f"the token's {name!r} claim is not a time")
        if float(claims["exp"]) <= now.timestamp():
            raise AuthenticationError("the token has expired; ask for a new one")
        return claims


def _stamp(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


# -- on disk ------------------------------------------------------------------------------------------------------

def signing_key(directory: Path) -> Ed25519PrivateKey:
    """The API signing key in `<dir>/api-signing.key`, made on first use; its public key is written beside it."""
    return ed25519_key(directory / SIGNING_KEY_FILE, directory / PUBLIC_KEY_FILE, _REPLACE)


def rotate_signing_key(directory: Path) -> Ed25519PrivateKey:
    """Replace the signing key (and its public key) with a new one: every token issued before is refused."""
    new = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    write_private(directory / SIGNING_KEY_FILE, new)
    return signing_key(directory)


def public_key(directory: Path) -> Ed25519PublicKey:
    """The API public key a service verifies with; ConfigError when none was made yet."""
    path = directory / PUBLIC_KEY_FILE
    if not path.exists():
        raise ConfigError(f"no API public key at {path}: issue a token first (`accord credentials token`), "
                          "which makes the signing key, or copy the issuing host's api-signing.pub there")
    return load_public_key(path)


def revocations(directory: Path) -> dict[str, int]:
    """Body id -> Unix time before which that body's tokens are refused (empty when nothing was revoked)."""
    path = directory / REVOCATIONS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise ConfigError(f"{path} is not JSON; restore it, or delete it and revoke again") from None
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise ConfigError(f"{path} must map body ids to Unix times; restore it, or delete it and revoke again")
    return {str(body): int(value) for body, value in data.items()}


def revoke(directory: Path, body: str, now: dt.datetime) -> int:
    """Refuse every token of `body` issued up to now (to the next whole second, as tokens carry whole seconds)."""
    cutoff = math.ceil(now.timestamp())
    table = revocations(directory) | {body: cutoff}
    write_private(directory / REVOCATIONS_FILE, json.dumps(table, indent=2, sort_keys=True))
    return cutoff


def verifier_for(directory: Path, clock: Clock = system_clock) -> TokenVerifier:
    """A verifier reading the secrets directory's public key and revocations afresh on each call."""
    return TokenVerifier(lambda: public_key(directory), lambda: revocations(directory), clock)


def service_token(directory: Path, service: str, ttl: dt.timedelta = dt.timedelta(hours=1),
                  clock: Clock = system_clock) -> str:
    """A token for one of Accord's own services (body `accord`, role `service`), signed with the local key."""
    return issue(signing_key(directory), SERVICE_BODY, SERVICE_ROLE, service, ttl, clock())


class ServiceTokens:
    """A service's bearer token for calling Accord's own APIs, issued from the local key and renewed ten minutes
    before it expires; call it for the current token (the registry client takes one)."""

    def __init__(self, directory: Path, service: str, clock: Clock = system_clock) -> None:
        self._directory, self._service, self._clock = directory, service, clock
        self._lock = threading.Lock()
        self._token, self._renew_at = "", dt.datetime.min.replace(tzinfo=dt.UTC)

    def __call__(self) -> str:
        with self._lock:
            now = self._clock()
            if now >= self._renew_at:
                self._token = service_token(self._directory, self._service, clock=lambda: now)
                self._renew_at = now + dt.timedelta(minutes=50)
            return self._token


def write_token(path: Path, token: str) -> None:
    """Write a token to `path` readable by its owner only (0600), replacing what was there."""
    write_private(path, token + "\n")
