"""`accord local` as a user runs it: up, status, env, down, and external services named by ACCORD_ vars."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import requests

from broker.config import Settings
from broker.demo import job as demo
from broker.local import processes
from broker.local.python_service import PythonService
from broker.local.stack import Endpoints, LocalStack
from tests.conftest import apply_again, control_state, kafka_env
from tests.integration.governance_process import withdraw_grant


def _accord(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", *args], capture_output=True, text=True, env=env, timeout=180,
        check=False,
    )


def test_cli_up_status_env_down_leaves_nothing_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env["ACCORD_STATE_DIR"] = str(tmp_path / "state")
    env["ACCORD_HOME"] = str(Settings().home)

    up = _accord(["local", "up"], env)
    assert up.returncode == 0, up.stderr
    try:
        status = _accord(["local", "status"], env)
        assert status.returncode == 0, status.stdout + status.stderr
        for name in ("kafka", "opa", "registry", "api", "governance", "console", "gate", "supervisor"):
            assert f"{name:<8} up" in status.stdout
        printed = _accord(["local", "env"], env).stdout.splitlines()
        assert [line.split("=")[0] for line in printed] == [
            "ACCORD_KAFKA_BOOTSTRAP", "ACCORD_KAFKA_SECURITY_PROTOCOL", "ACCORD_KAFKA_USERNAME",
            "ACCORD_KAFKA_PASSWORD_FILE", "ACCORD_OPA_URL", "ACCORD_OPA_TOKEN_FILE", "ACCORD_REGISTRY_URL",
            "ACCORD_API_URL", "ACCORD_GOVERNANCE_URL", "ACCORD_CONSOLE_URL"]
        # the password and OPA's token are named by their files (0600), never printed
        for variable in ("ACCORD_KAFKA_PASSWORD_FILE", "ACCORD_OPA_TOKEN_FILE"):
            secret_file = Path(dict(line.split("=", 1) for line in printed)[variable])
            assert secret_file.stat().st_mode & 0o777 == 0o600
            assert secret_file.read_text() not in "\n".join(printed)
        again = _accord(["local", "up"], env)  # idempotent: same endpoints, nothing new started
        assert again.returncode == 0
        assert _accord(["local", "env"], env).stdout.splitlines() == printed
        _a_crashed_opa_comes_back_where_it_was(tmp_path / "state", env, printed)
        _the_supervisor_restarts_a_crashed_opa_by_itself(tmp_path / "state", env, printed)
        # New OPA tokens: the stack's OPA restarts with a bundle that knows only them; the old writer is refused.
        token_file = Path(dict(line.split("=", 1) for line in printed)["ACCORD_OPA_TOKEN_FILE"])
        old_token = token_file.read_text()
        rotated = _accord(["credentials", "rotate-opa-tokens"], env)
        assert rotated.returncode == 0 and "the local OPA restarted with them" in rotated.stdout, rotated.stderr
        opa_url = dict(line.split("=", 1) for line in printed)["ACCORD_OPA_URL"]
        catalog = f"{opa_url}/v1/data/accord/catalog"
        assert requests.put(catalog, json={}, timeout=5, headers={"Authorization": f"Bearer {old_token}"}
                            ).status_code == 401
        # The governance service reads the new writer token when OPA refuses the old one; the operator's token
        # comes from this stack's own API key, as `accord credentials token` issues it.
        operator = _accord(["credentials", "token", "--body", "accord", "--role", "operator", "--person", "tests"],
                           env)
        assert operator.returncode == 0, operator.stderr
        applied = _accord(["catalog", "apply", "--token", operator.stdout.strip()], env)
        assert applied.returncode == 0, applied.stderr
        assert "by tests (operator, accord)" in applied.stdout
    finally:
        down = _accord(["local", "down"], env)
    assert down.returncode == 0
    assert down.stdout.strip() == "stopped: supervisor, console, gate, governance, api, registry, opa, kafka"
    for name in ("kafka", "opa", "registry", "api", "governance", "console", "gate"):
        assert not (tmp_path / "state" / name / f"{name}.pid").exists()
    after = _accord(["local", "status"], env)
    assert after.returncode == 1 and "DOWN" in after.stdout
    assert _accord(["local", "env"], env).returncode == 1


def _a_crashed_opa_comes_back_where_it_was(state: Path, env: dict[str, str], printed: list[str]) -> None:
    """kill -9 of the stack's OPA, which the supervisor is told to leave alone: status names it down and the API
    not ready because of it; `accord local up` starts it again on the same port, and the API, never restarted, is
    ready again by itself."""
    held = _accord(["local", "hold", "opa", "--seconds", "600"], env)
    assert held.returncode == 0 and "opa: left alone for 600 s" in held.stdout, held.stdout + held.stderr
    pid = processes.read_pid(state / "opa" / "opa.pid")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while processes.alive(pid, "opa"):
        assert time.monotonic() < deadline, "OPA outlived SIGKILL"
        time.sleep(0.1)
    status = _accord(["local", "status"], env)
    assert status.returncode == 1, status.stdout
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
    assert lines["opa"].startswith("opa      DOWN"), status.stdout
    assert "NOT READY" in lines["api"] and "opa: OPA at" in lines["api"], status.stdout
    revived = _accord(["local", "up"], env)
    assert revived.returncode == 0, revived.stdout + revived.stderr
    assert _accord(["local", "env"], env).stdout.splitlines() == printed  # every address as it was
    api_url = dict(line.split("=", 1) for line in printed)["ACCORD_API_URL"]
    deadline = time.monotonic() + 60
    while (answer := requests.get(f"{api_url}/ready", timeout=30)).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.5)
    assert _accord(["local", "status"], env).returncode == 0
    assert _accord(["local", "hold", "opa", "--seconds", "0"], env).stdout.strip() == "opa: supervised again"


def _the_supervisor_restarts_a_crashed_opa_by_itself(state: Path, env: dict[str, str], printed: list[str]) -> None:
    """kill -9 of the stack's OPA with no one to run `accord local up`: the supervisor starts it again on its
    port, logs it, and status counts the restart with its reason; the API is ready again by itself."""
    pid = processes.read_pid(state / "opa" / "opa.pid")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        status = _accord(["local", "status"], env)
        lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
        if status.returncode == 0 and "restarted 1x" in lines["opa"]:
            break
        assert time.monotonic() < deadline, status.stdout + status.stderr
        time.sleep(1.0)
    assert f"last: pid {pid} " in lines["opa"], lines["opa"]
    assert processes.read_pid(state / "opa" / "opa.pid") != pid
    assert _accord(["local", "env"], env).stdout.splitlines() == printed  # on the port it had
    log = (state / "supervisor" / "logs" / "supervisor.log").read_text()
    assert f"opa: pid {pid} " in log and "opa: up again at" in log, log


def test_external_services_are_used_not_started(services: Endpoints, tmp_path: Path) -> None:
    elsewhere = PythonService("governance", tmp_path / "elsewhere")     # the session stopped its own
    url = elsewhere.start(kafka_env(services.kafka) | {"ACCORD_OPA_URL": services.opa_url}, 90, probe="/health")
    try:
        _uses_external(dataclasses.replace(services, governance_url=url), tmp_path / "state")
    finally:
        elsewhere.stop()


def _uses_external(services: Endpoints, tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, kafka_bootstrap=services.kafka.bootstrap,
                        kafka_username=services.kafka.username, kafka_password_file=services.kafka_password_file,
                        opa_url=services.opa_url, opa_token_file=services.opa_token_file,
                        registry_url=services.registry_url, api_url=services.api_url,
                        governance_url=services.governance_url, console_url=services.console_url)
    stack = LocalStack(settings)
    assert stack.up() == services
    assert not (tmp_path / "governance" / "governance.pid").exists()
    assert not (tmp_path / "kafka" / "kafka.pid").exists()
    assert not (tmp_path / "opa" / "opa.pid").exists()
    assert not (tmp_path / "registry" / "registry.pid").exists()
    assert not (tmp_path / "api" / "api.pid").exists()
    assert not (tmp_path / "gate" / "gate.pid").exists()
    assert not (tmp_path / "console" / "console.pid").exists()
    states = stack.status()
    assert all(s.running and not s.managed for s in states)
    assert stack.down() == []


def test_demo_delivers_each_view_and_enforces_a_revocation(services: Endpoints, applied_catalog: dict[str, Any],
                                                          postgres: str, tmp_path: Path) -> None:
    said: list[str] = []
    # The session stopped the stack's governance service (other tests run their own on a fake clock); the demo
    # talks to a real `accord governance serve` process over HTTP.
    governance = PythonService("governance", tmp_path / "governance")
    url = governance.start(kafka_env(services.kafka) | {"ACCORD_OPA_URL": services.opa_url}, 90, probe="/health")
    result: dict[str, Any] = {}
    grants_before = set(control_state(services.kafka).grants)
    try:
        # Settings(): the session's secrets, whose API token key signs the demo's tokens
        result = demo.run(dataclasses.replace(services, governance_url=url), say=said.append, own_gate=True,
                          settings=Settings(), postgres_dsn=postgres)
    finally:
        # Put things back even when the demo failed midway: later tests must not find Blaby granted T1 (its
        # dispute's grant, withdrawn through the governance service, whose log would otherwise write it again), and
        # expect the session's catalog (with the gate tests' agreements), not the shipped one the demo applied.
        try:
            left = control_state(services.kafka).grants
            for ident in sorted(set(left) - grants_before):
                withdraw_grant(url, applied_catalog, ident, left[ident])
        finally:
            governance.stop()
        apply_again(services, applied_catalog, client_id="test-demo-cleanup")
    views = result["views"]
    assert views["leicester-city-council/dph"]["rows"] == demo.DAY_CASES["leicester"]
    assert views["leicester-city-council/analyst"]["fields"] == ["age_band", "lsoa", "sex"]
    # each view is read on its own role's login, which the broker lets read that role's topics only
    assert views["leicester-city-council/analyst"]["login"] == "leicester-city-council.analyst"
    assert views["leicester-city-council/dph"]["login"] == "leicester-city-council.dph"
    assert views["nottingham-city-council/dph"]["areas"] == ["E06000018"]
    assert views["leicestershire-county-council/dph"]["areas"] == ["E07000129", "E07000130"]
    assert views["quarantined"] == 1
    revocation = result["revocation"]
    # Latencies are measured by `make bench` (f), never asserted here: a busy machine is not a defect.
    assert revocation["latency_ms"] >= 0 and revocation["delivered_after_revocation"] == 0
    assert 0 < revocation["delivered"] <= revocation["published_before"] < revocation["published"]
    assert any("live revocation" in line for line in said)
    dispute = result["dispute"]
    assert (dispute["state"], dispute["outcome"]) == ("enforced", "granted-in-part")
    assert dispute["rows"] == 4 and dispute["areas"] == ["E07000129"]
    assert dispute["fields"] == ["lsoa", "occupation", "specimen_date"]
    assert dispute["decision_to_enforced_ms"] >= 0
    assert any("decided" in line for line in said)
    # Leicester's DPH's sink filled its table with the day's rows (and keeps earlier deliveries too)
    table = result["table"]
    assert table["rows"] == demo.DAY_CASES["leicester"] and table["total"] >= table["rows"]
    assert any("PostgreSQL sink" in line for line in said)
    _signs_in_at_the_console(services, said)


def _signs_in_at_the_console(services: Endpoints, said: list[str]) -> None:
    """The demo's closing lines name the stack's console and a link per player; the DPH's link signs in there."""
    assert services.console_url is not None
    assert any(f"the Accord Console is at {services.console_url}" in line for line in said)
    links = [line.split(": ", 1)[1] for line in said if "/sign-in?link=" in line]
    assert len(links) == 3 and all(link.startswith(f"{services.console_url}/sign-in?link=") for link in links)
    with httpx.Client(follow_redirects=False) as browser:
        landing = browser.get(links[0])
        csrf = re.search(r'name="csrf" value="([^"]+)"', landing.text)
        assert landing.status_code == 200 and csrf is not None
        link = links[0].split("link=", 1)[1]
        signed_in = browser.post(f"{services.console_url}/sign-in", data={"csrf": csrf.group(1), "link": link})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
        home = browser.get(f"{services.console_url}/")
        assert home.status_code == 200 and "Exercise Director of Public Health" in home.text


def test_session_services_are_managed_processes(services: Endpoints) -> None:
    port = int(services.kafka.bootstrap.rsplit(":", 1)[1])
    assert processes.port_in_use(port)
