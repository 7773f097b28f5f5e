"""Marks every test under tests/integration and tests/e2e as needing the real services, and starts those services
(Kafka, OPA, the registry; through `accord local` code or named by ACCORD_ variables) once per session."""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import create_topics
from broker.adapters.kafka_control import ControlView, ControlWriter, ensure_control_topics
from broker.adapters.opa import OpaPolicyEngine
from broker.catalog import load_and_compile
from broker.config import Settings
from broker.domain.control import PolicyState
from broker.domain.ladder import Actor
from broker.local.stack import Endpoints, LocalStack
from broker.local.toolchain import REPO_ROOT
from broker.runtime.governance import GovernanceService
from broker.security.api_tokens import OPERATOR_ROLE, SERVICE_BODY, ServiceTokens
from broker.security.control_keys import ControlSigner, control_signing_key, trusted_keys
from broker.security.kafka_identities import local_access
from broker.services import policy_changes
from tests.integration.gate_support import Receiver, make_test_catalog

POLICIES = REPO_ROOT / "policies"
SCHEMAS = REPO_ROOT / "schemas"
_REAL = {"integration", "e2e", "browser"}


def kafka_env(kafka: KafkaAccess) -> dict[str, str]:
    """The environment that makes a service started by a test act as `kafka`'s principal."""
    env = {"ACCORD_KAFKA_BOOTSTRAP": kafka.bootstrap, "ACCORD_KAFKA_SECURITY_PROTOCOL": kafka.security_protocol}
    if kafka.username and kafka.password is not None:
        env |= {"ACCORD_KAFKA_USERNAME": kafka.username, "ACCORD_KAFKA_PASSWORD": kafka.password.get_secret_value()}
    return env


def bearer(body: str = "accord", role: str = "service", person: str = "tests") -> dict[str, str]:
    """An Authorization header with a token the session's services accept (signed with the key of the secrets dir
    that `local_settings` points this process at); by default Accord's own service identity."""
    from broker.security.api_tokens import issue, signing_key

    now = dt.datetime.now(dt.UTC)
    token = issue(signing_key(Settings().secrets_dir), body, role, person, dt.timedelta(hours=1), now)
    return {"Authorization": f"Bearer {token}"}


TEST_OPERATOR = Actor(SERVICE_BODY, OPERATOR_ROLE, "tests")


def control_writer(kafka: KafkaAccess, client_id: str = "test-control") -> ControlWriter:
    """A control writer as the governance service has it: signing with the control key of the secrets dir that
    `local_settings` points this process at, which the session's gates trust. (It writes as `kafka`'s principal:
    the session's admin, since Kafka lets no one else but the governance service write the control topic.)"""
    return ControlWriter(kafka, client_id=client_id,
                         signer=ControlSigner(control_signing_key(Settings().secrets_dir)))


def control_state(kafka: KafkaAccess) -> PolicyState:
    """The control topic's state now, as the session's gates and API fold it (signed records only)."""
    settings = Settings()
    view = ControlView(kafka, trusted_keys(settings.secrets_dir, settings.control_public_key),
                       client_id="test-control-view", reader="test")
    try:
        return view.current()
    finally:
        view.close()


def governance_service(services: Endpoints, **options: Any) -> GovernanceService:
    """A governance service on the session's Kafka and OPA, signing with the session's control key (not started)."""
    return GovernanceService(services.kafka, control_key=control_signing_key(Settings().secrets_dir),
                             catalog_engine=opa_as(services.opa_url), **options)


def service_tokens() -> ServiceTokens:
    """Accord's service token for this session's registry (the secrets dir `local_settings` points at)."""
    return ServiceTokens(Settings().secrets_dir, "tests")


def opa_as(url: str, role: str = "writer") -> OpaPolicyEngine:
    """The session's OPA, called with the local `role` token (writer: may also replace the catalog)."""
    from broker.security.opa_tokens import opa_engine

    return opa_engine(url, Settings(), role)


def apply_again(services: Endpoints, catalog: dict[str, Any], client_id: str = "test-control") -> None:
    """Apply the session's catalog again, as the tests' operator: whatever a test (a drill, a demo) applied since is
    undone for the tests after it."""
    engine, writer = opa_as(services.opa_url), control_writer(services.kafka, client_id=client_id)
    try:
        policy_changes.apply_catalog(writer, engine, catalog, by=TEST_OPERATOR)
    finally:
        engine.close()
        writer.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _REAL & set(Path(str(item.path)).parts):
            item.add_marker(pytest.mark.integration)


def _in_kafka_pythons_task_close(trace: TracebackType | None) -> bool:
    while trace is not None:
        code = trace.tb_frame.f_code
        if code.co_name == "close" and Path(code.co_filename).parts[-3:] == ("kafka", "net", "selector.py"):
            return True
        trace = trace.tb_next
    return False


@pytest.fixture(scope="session", autouse=True)
def kafka_python_cancelled_connections() -> Iterator[None]:
    """kafka-python 3.0.12 cancels a connection's coroutine when the broker drops it (`Connection lost`) without
    closing the coroutine's socket, which the garbage collector then finds open in whichever test runs then. Only
    that case is excused (a ResourceWarning raised while kafka-python's selector closes its own task): a socket left
    open by Accord's code or a test still fails the suite."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if issubclass(unraisable.exc_type, ResourceWarning) and _in_kafka_pythons_task_close(unraisable.exc_traceback):
            logging.getLogger(__name__).warning("kafka-python left a socket open: %s", unraisable.exc_value)
            return
        previous(unraisable)

    sys.unraisablehook = hook
    yield
    sys.unraisablehook = previous


@pytest.fixture(scope="session")
def local_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The settings of the session's local services: their state (and secrets) in a temporary directory, which
    the tests' own Accord code (Settings() anywhere in this process) uses too: the same API token key, the same
    Kafka passwords, and nothing written to a developer's own state."""
    state = tmp_path_factory.mktemp("accord-local")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACCORD_STATE_DIR", str(state))
        yield Settings(state_dir=state)


@pytest.fixture(scope="session")
def kafka_as(services: Endpoints, local_settings: Settings) -> Callable[[str], KafkaAccess]:
    """How a Kafka user Accord keeps reaches the session's Kafka, as itself: a publisher (`ukhsa`), a role of a body
    (`subscriber_user("leicester-city-council", "dph")`) or a service (`accord.gate`). Skipped for an external
    Kafka, whose users Accord does not keep."""
    if local_settings.kafka_bootstrap:
        pytest.skip("ACCORD_KAFKA_BOOTSTRAP names an external Kafka: its users are not Accord's to test")

    def access(user: str) -> KafkaAccess:
        return local_access(local_settings.secrets_dir, services.kafka.bootstrap, user)
    return access


@pytest.fixture(scope="session")
def services(local_settings: Settings) -> Iterator[Endpoints]:
    """Kafka and OPA for the whole session; external ones when ACCORD_KAFKA_BOOTSTRAP/ACCORD_OPA_URL are set.

    Local services run from a temporary state directory (the jar and binary cache is shared), so a
    developer's own `accord local up` is never touched, and are stopped and wiped at the end.
    """
    stack = LocalStack(local_settings)
    try:
        endpoints = stack.up()
        # Gate tests run their own workers (threads or processes) in their own consumer groups; the stack's
        # worker would deliver the same records a second time to the same topics.
        stack.gate.stop()
        # Governance tests run their own service with a fake clock; the stack's would fire deadlines on real time.
        stack.governance.stop()
        yield endpoints
    finally:
        stack.down(wipe=True)


@pytest.fixture(scope="session")
def postgres(services: Endpoints, local_settings: Settings) -> Iterator[str]:
    """A PostgreSQL server of the session's state directory (Debian's package), for the tests that ask for it;
    its DSN (the password is in postgres_server.password_file). Stopped, and wiped with the state, at the end."""
    from broker.local import postgres_server, processes

    stack = LocalStack(local_settings)
    try:
        yield stack.up_postgres()
    finally:
        postgres_server.stop(processes.read_pid(stack.postgres.pid_file))


@pytest.fixture(scope="session")
def applied_catalog(services: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The shipped catalog plus the gate tests' agreements, compiled, pushed to OPA and announced to gates."""
    document = load_and_compile(make_test_catalog(tmp_path_factory.mktemp("catalog")), REPO_ROOT / "schemas")
    ensure_control_topics(services.kafka)
    engine, writer = opa_as(services.opa_url), control_writer(services.kafka)
    try:
        policy_changes.apply_catalog(writer, engine, document, by=TEST_OPERATOR)
    finally:
        engine.close()
        writer.close()
    return document


@pytest.fixture
def receiver(services: Endpoints) -> Iterator[Receiver]:
    """A subscriber's view of delivery topics (as the session's admin)."""
    r = Receiver(services.kafka, services.registry_url, service_tokens())
    yield r
    r.close()


@pytest.fixture
def topic(services: Endpoints, request: pytest.FixtureRequest) -> str:
    """A fresh topic whose name says which test made it."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:80]
    name = f"test.{slug}.{uuid.uuid4().hex[:8]}"
    create_topics(services.kafka, [name])
    return name
