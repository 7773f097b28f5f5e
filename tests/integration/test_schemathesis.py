"""Hostile input from Accord's own OpenAPI documents (schemathesis): no generated request makes the ingest API, the
governance API or the schema registry answer 5xx, none gets in without a valid token, and a body holding no
governance role never changes governance state.

The apps run in-process over the session's real Kafka and OPA (with the shipped authz policy and the test
catalog), each guarded by a test signing key, as tests/integration/test_api_authz.py does; they write to topics of
their own, so no generated call reaches another test's disputes or schemas. Run with `-s` to see the case counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from secrets import token_bytes
from typing import Any

import pytest
from fastapi import FastAPI
from hypothesis import strategies as st

from broker.api.app import create_api_app
from broker.api.auth import Guard
from broker.api.governance_app import create_governance_app
from broker.api.registry_app import create_registry_app
from broker.config import Settings
from broker.domain.adjudication import DisputeRequest
from broker.domain.audit import new_signing_key
from broker.domain.ladder import Actor
from broker.domain.webhooks import parse_allow
from broker.local.stack import Endpoints
from broker.local.toolchain import REPO_ROOT
from broker.runtime.api import open_ingest
from broker.runtime.registry import open_registry
from broker.security.api_tokens import TokenVerifier
from broker.services.ingest import read_quarantine
from tests.conftest import SCHEMAS, governance_service, opa_as
from tests.integration import schemathesis_support as fuzz
from tests.integration.gate_support import T1
from tests.unit.auth_fakes import KEY, now

LEICESTER = "leicester-city-council"
PUBLIC = {("GET", "/health"), ("GET", "/")}
# The policy lets any member body raise a dispute, make an access request, report a misroute, set its own webhook or
# register a receipt key; every other governance write needs a party, a decider, a reviewer, a declarer or a
# break-glass role.
BY_ANY_MEMBER = {("POST", "/disputes"), ("POST", "/requests"), ("POST", "/misroutes"), ("PUT", "/webhooks"),
                 ("POST", "/receipt-keys")}
NO_GOVERNANCE_ROLE = ("nottingham-city-council", "analyst")


@dataclass(frozen=True)
class Target:
    """One app under test, who calls it in the authorised run, and path parameters that name something real."""

    name: str
    app: FastAPI
    caller: tuple[str, str]
    pinned: dict[str, str]


TALLY = fuzz.Tally()


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    print()
    for line in TALLY.lines():
        print(line)


def _guard(opa_url: str) -> Guard:
    return Guard(TokenVerifier(KEY.public_key, dict, now).verify, opa_as(opa_url, "reader"))


@pytest.fixture(scope="module")
def ingest_target(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[Target]:
    with open_ingest(services.kafka, services.registry_url, Settings()) as (ingest, log):
        app = create_api_app(ingest, lambda stream, limit: read_quarantine(log, stream, limit),
                             guard=_guard(services.opa_url))
        yield Target("ingest", app, ("ukhsa", "ig-lead"), {"stream": T1})


@pytest.fixture(scope="module")
def registry_target(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[Target]:
    registry, changelog = open_registry(services.kafka, topic=f"_accord.schemas.fuzz-{uuid.uuid4().hex[:8]}")
    try:
        entry = registry.register("fuzz-value", (REPO_ROOT / "schemas" / f"{T1}.avsc").read_text())
        yield Target("registry", create_registry_app(registry, guard=_guard(services.opa_url)), ("accord", "service"),
                     {"subject": entry.subject, "version": str(entry.version), "schema_id": str(entry.schema_id)})
    finally:
        changelog.close()


@pytest.fixture(scope="module")
def governance_target(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[Target]:
    run = uuid.uuid4().hex[:8]
    # A ticker that never fires within the run: deadlines are not what is tested here.
    service = governance_service(services, audit_key=new_signing_key(), schemas_dir=SCHEMAS,
                                webhook_secret=token_bytes(32), webhook_allow=parse_allow("127.0.0.1/32"),
                                tick_s=3600.0,
                                transactional_id=f"fuzz-governance-{run}", topic=f"_accord.governance.fuzz-{run}",
                                audit_topic=f"_accord.audit.fuzz-{run}").start()
    try:
        dispute = service.governance.raise_dispute(Actor(LEICESTER, "dph", "Fuzz Player"), DisputeRequest(
            kind="refusal", stream=T1, role="dph", purpose="health-protection", justification="fuzzing",
            fields=("lsoa",), decision_id="plan-refused", urgency="urgent"))
        app = create_governance_app(service.governance, service.notifier.log, guard=_guard(services.opa_url),
                                    changes=service.changes)  # the control changes are fuzzed too
        yield Target("governance", app, (LEICESTER, "dph"), {"ident": dispute.id})
    finally:
        service.stop()


@pytest.fixture(params=["ingest", "governance", "registry"])
def target(request: pytest.FixtureRequest) -> Target:
    found: Target = request.getfixturevalue(f"{request.param}_target")
    return found


def _loopback_webhooks(case: Any) -> Any:
    # A generated webhook URL would be called when the body is notified: keep every one on a closed loopback port.
    if case.operation.path == "/webhooks" and isinstance(case.body, dict) and isinstance(case.body.get("url"), str):
        case.body = {**case.body, "url": "http://127.0.0.1:9/fuzz"}
    return case


def test_authorised_calls_never_answer_5xx(target: Target) -> None:
    schema = fuzz.load(target.app)
    headers = fuzz.valid(*target.caller)
    for operation in fuzz.operations(schema):
        allowed = fuzz.documented(operation)

        def send(case: Any, allowed: frozenset[int] = allowed) -> None:
            response = _loopback_webhooks(case).call(headers=headers)
            TALLY.add(target.name, "authorised", response.status_code)
            fuzz.check_server_side(case, response, allowed)

        fuzz.exercise(operation, fuzz.strategy(operation, target.pinned), send)
    assert TALLY.cases[target.name, "authorised"] >= 5 * len(fuzz.operations(schema))


def test_no_valid_token_is_always_401(target: Target) -> None:
    schema = fuzz.load(target.app)
    variants = fuzz.bad_credentials(*target.caller)
    guarded = fuzz.operations(schema, lambda method, path: (method, path) not in PUBLIC)
    for operation in guarded:
        def send(drawn: tuple[Any, str]) -> None:
            case, variant = drawn
            response = case.call(headers=variants[variant])
            TALLY.add(target.name, "no-valid-token", response.status_code)
            assert response.status_code == 401, (
                f"{case.operation.label} with {variant} credentials answered {response.status_code}: "
                f"{response.text[:300]}\n{case.as_curl_command()}")
            assert response.headers["www-authenticate"][0].startswith("Bearer")

        cases = st.tuples(fuzz.strategy(operation, target.pinned), st.sampled_from(sorted(variants)))
        fuzz.exercise(operation, cases, send)
    assert TALLY.cases[target.name, "no-valid-token"] >= 5 * len(guarded)


def test_a_body_without_a_governance_role_never_changes_governance(governance_target: Target) -> None:
    schema = fuzz.load(governance_target.app)
    headers = fuzz.valid(*NO_GOVERNANCE_ROLE)
    writes = fuzz.operations(schema, lambda method, path: method != "GET" and (method, path) not in BY_ANY_MEMBER)
    for operation in writes:
        def send(case: Any) -> None:
            response = case.call(headers=headers)
            TALLY.add("governance", "no-role-writes", response.status_code)
            assert not 200 <= response.status_code < 300, (
                f"{case.operation.label} by {NO_GOVERNANCE_ROLE} answered {response.status_code}: "
                f"{response.text[:300]}\n{case.as_curl_command()}")
            fuzz.check_server_side(case, response, fuzz.documented(case.operation))

        fuzz.exercise(operation, fuzz.strategy(operation, governance_target.pinned), send)
    assert len(writes) >= 8
    assert TALLY.cases["governance", "no-role-writes"] >= 5 * len(writes)
