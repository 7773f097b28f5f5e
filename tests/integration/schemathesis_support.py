"""Schemathesis-generated requests against an in-process Accord app: bounded, reproducible, and counted, so a run
can report how many cases each app and each kind of caller saw and what they were answered."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from tests.unit.auth_fakes import KEY, now, token

MAX_EXAMPLES = 25   # per operation and run: enough to reach every documented field, small enough for 2 cores
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
# What the apps answer but their OpenAPI does not declare: FastAPI's 400 for a body that is not JSON at all, the
# guard's 401/403 (broker/api/auth.py), an unknown stream, dispute or subject (404), a refused governance move
# (409), a body too large (413) or of another media type (415), and the registry's Confluent-style 422 for a body
# it reads itself. Anything else outside the documented codes is a conformance failure; any 5xx always is.
UNDECLARED = frozenset({400, 401, 403, 404, 409, 413, 415, 422})


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def _tampered(good: str) -> str:
    head, payload, signature = good.split(".")
    return ".".join((head, payload, ("B" if signature[0] == "A" else "A") + signature[1:]))


def bad_credentials(body: str, role: str) -> dict[str, dict[str, str]]:
    """Ways to call without a valid token: none, a changed signature, another key, expired, another scheme."""
    return {
        "none": {},
        "tampered": bearer(_tampered(token(body, role))),
        "wrong-key": bearer(token(body, role, key=Ed25519PrivateKey.generate())),
        "expired": bearer(token(body, role, at=now() - dt.timedelta(hours=3))),
        "not-bearer": {"Authorization": f"Basic {token(body, role)}"},
    }


def valid(body: str, role: str) -> dict[str, str]:
    return bearer(token(body, role, key=KEY))


@dataclass
class Tally:
    """Cases sent per (app, run) and the statuses they were answered with."""

    cases: Counter[tuple[str, str]] = field(default_factory=Counter)
    statuses: dict[tuple[str, str], Counter[int]] = field(default_factory=dict)

    def add(self, app: str, run: str, status: int) -> None:
        self.cases[app, run] += 1
        self.statuses.setdefault((app, run), Counter())[status] += 1

    def lines(self) -> Iterator[str]:
        for key, count in sorted(self.cases.items()):
            answered = ", ".join(f"{code}x{n}" for code, n in sorted(self.statuses[key].items()))
            yield f"schemathesis {key[0]:<10} {key[1]:<14} {count:>5} cases  ({answered})"
        yield f"schemathesis total {sum(self.cases.values())} cases"


def load(app: FastAPI) -> Any:
    """The app's own OpenAPI document, fetched from it as a client would (`/openapi.json` is not guarded)."""
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def operations(schema: Any, keep: Callable[[str, str], bool] = lambda method, path: True) -> list[Any]:
    found = [result.ok() for result in schema.get_all_operations()]
    return [op for op in found if keep(op.method.upper(), op.path)]


def strategy(operation: Any, pinned: Mapping[str, str]) -> st.SearchStrategy[Any]:
    """Positive and negative cases; where the path names a pinned parameter (a real stream or dispute), half the
    cases use it so the route's own code runs, not only its 404."""
    names = {name: value for name, value in pinned.items() if f"{{{name}}}" in operation.path}
    options = [operation.as_strategy(mode) for mode in MODES]
    if names:
        options.append(operation.as_strategy(schemathesis.GenerationMode.POSITIVE, path_parameters=names))
    return st.one_of(options)


def exercise(operation: Any, cases: st.SearchStrategy[Any], send: Callable[[Any], None]) -> None:
    """Run `send` on MAX_EXAMPLES generated cases of one operation (the same cases on every run)."""

    @SETTINGS
    @given(case=cases)
    def run(case: Any) -> None:
        send(case)

    run()


def check_server_side(case: Any, response: Any, documented: frozenset[int]) -> None:
    """No 5xx, and no status the operation neither documents nor is known to answer (UNDECLARED)."""
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code in documented | UNDECLARED, (
        f"{case.operation.label} answered undocumented {response.status_code}: {response.text[:300]}\n"
        f"{case.as_curl_command()}")


def documented(operation: Any) -> frozenset[int]:
    return frozenset(int(code) for code in operation.definition.raw.get("responses", {}) if code.isdigit())
