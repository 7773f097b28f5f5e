"""Tokens signed with a test key and a stand-in policy engine, so app tests authenticate as the real guard does."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.api.auth import AUTHZ_RULE, Guard
from broker.errors import PolicyEngineError
from broker.security.api_tokens import TokenVerifier, issue

KEY = Ed25519PrivateKey.generate()
TTL = dt.timedelta(hours=1)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def token(body: str, role: str, person: str | None = None, key: Ed25519PrivateKey = KEY,
          ttl: dt.timedelta = TTL, at: dt.datetime | None = None) -> str:
    return issue(key, body, role, person or f"{role} of {body}", ttl, at or now())


def bearer(body: str, role: str, person: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(body, role, person)}"}


SERVICE = bearer("accord", "service", "test-suite")
NO_TOKEN = {"Authorization": ""}


class FakeAuthz:
    """Allows what `rule` allows (default: everything) and records every input it was asked about.

    Asked a list rule (the registry's `visible_subjects`), it keeps the items `sees(identity, item)` keeps.
    """

    def __init__(self, rule: Callable[[Mapping[str, Any]], bool] = lambda _: True, down: bool = False,
                 sees: Callable[[Mapping[str, Any], str], bool] = lambda who, item: True) -> None:
        self.rule, self.down, self.sees = rule, down, sees
        self.asked: list[Mapping[str, Any]] = []

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> Any:
        if self.down:
            raise PolicyEngineError("OPA at http://opa.test unreachable")
        self.asked.append(input_doc)
        if rule != AUTHZ_RULE:
            items = next(value for value in input_doc.values() if isinstance(value, list))
            # Access requests are listed as resource documents; the answer is their ids.
            return [item["id"] if isinstance(item, Mapping) else item for item in items
                    if self.sees(input_doc["identity"], item)]
        allowed = self.rule(input_doc)
        return {"allow": allowed, "reasons": [] if allowed else ["the fake policy says no"]}


def guard(engine: FakeAuthz | None = None, revoked: Mapping[str, int] | None = None) -> Guard:
    verifier = TokenVerifier(KEY.public_key, lambda: dict(revoked or {}), now)
    return Guard(verifier.verify, engine or FakeAuthz())
