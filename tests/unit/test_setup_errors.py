"""What a user sees when the machine lacks a toolchain or a service fails to start."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from broker.config import Settings
from broker.errors import ServiceStartError, SetupError
from broker.local import opa_server, toolchain
from broker.local.stack import LocalStack
from broker.security.bundles import SignedBundle


def _run_cli(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")} | env_extra
    return subprocess.run([sys.executable, "-m", "broker", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.mark.parametrize("tool", ["java", "mvn", "go"])
def test_missing_toolchain_is_one_line_naming_what_to_install(tool: str, monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SetupError) as err:
        toolchain.require_tool(tool)
    message = str(err.value)
    assert "\n" not in message and "install" in message and f"'{tool}'" in message


def test_cli_without_java_prints_one_line_error(tmp_path: Path) -> None:
    result = _run_cli(["local", "up"], {"PATH": str(tmp_path), "ACCORD_HOME": str(tmp_path / "home")})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "accord: error: 'java' not found on PATH. Java 17 or newer is needed to run Kafka: install a JDK "
        "(e.g. apt-get install openjdk-17-jdk-headless)."
    ]


def _fake_opa(path: Path, script: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_opa_that_dies_reports_its_log_tail(tmp_path: Path) -> None:
    binary = tmp_path / "opa"
    _fake_opa(binary, "echo 'error: listen tcp: address already in use' >&2; exit 1")
    with pytest.raises(ServiceStartError) as err:
        bundle = SignedBundle(tmp_path / "bundle.tar.gz", tmp_path / "policy-bundle.pub", "p-test")
        opa_server.start(binary, opa_server.OpaLayout(tmp_path / "state"), timeout_s=10, bundle=bundle)
    assert "OPA exited during start-up" in str(err.value)
    assert "address already in use" in str(err.value)


def test_kafka_that_cannot_start_shows_its_output_not_a_traceback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home)
    settings.kafka_libs.mkdir(parents=True)
    # A jar of the right name but no classes: java starts and fails the way a broken install does.
    (settings.kafka_libs / f"kafka_2.13-{settings.kafka_version}.jar").write_bytes(b"")
    _fake_opa(settings.opa_binary, "exit 0")
    result = _run_cli(["local", "up"], {"ACCORD_HOME": str(home), "ACCORD_STATE_DIR": str(tmp_path / "s")})
    assert result.returncode == 1
    assert "accord: error: formatting Kafka storage failed" in result.stderr
    assert "kafka.tools.StorageTool" in result.stderr
    assert "Traceback" not in result.stderr


def test_cached_opa_is_not_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(home=tmp_path)
    _fake_opa(settings.opa_binary, "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no go: a rebuild would fail
    assert toolchain.ensure_opa(settings) == settings.opa_binary


def test_env_without_services_is_an_error(tmp_path: Path) -> None:
    assert LocalStack(Settings(state_dir=tmp_path)).endpoints() is None
    result = _run_cli(["local", "env"], {"ACCORD_STATE_DIR": str(tmp_path)})
    assert result.returncode == 1 and "accord local up" in result.stderr
