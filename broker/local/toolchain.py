"""Fetches the Kafka broker jars (Maven) and builds the OPA binary (go install) into Accord's cache, once."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from broker.config import Settings
from broker.errors import SetupError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_LOCAL = REPO_ROOT / "deploy" / "local"

_INSTALL_HINTS = {
    "java": "Java 17 or newer is needed to run Kafka: install a JDK (e.g. apt-get install openjdk-17-jdk-headless).",
    "mvn": "Maven is needed to fetch the Kafka jars: install it (e.g. apt-get install maven).",
    "npm": "npm is needed to fetch the console's GOV.UK Frontend: install Node.js (e.g. apt-get install npm).",
    "go": "Go is needed to build OPA: install Go 1.22 or newer (https://go.dev/doc/install).",
}


def apt_install(package: str, missing: str) -> None:
    """Install Debian's `package` with apt-get (update first), as root only; `missing` says what is not there and
    how to install it by hand, for a user who is not root."""
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise SetupError(missing)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for args in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", package]):
        proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise SetupError(f"`{' '.join(args[1:])}` failed (exit {proc.returncode}):\n{tail}")


def require_tool(name: str) -> str:
    """The path of a command on PATH, or a one-line SetupError naming what to install."""
    found = shutil.which(name)
    if found is None:
        raise SetupError(f"'{name}' not found on PATH. {_INSTALL_HINTS.get(name, '')}".strip())
    return found


def _run(args: list[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SetupError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def kafka_jars_present(settings: Settings) -> bool:
    return (settings.kafka_libs / f"kafka_2.13-{settings.kafka_version}.jar").is_file()


def ensure_kafka_jars(settings: Settings) -> Path:
    """The directory of Kafka broker jars, fetched from Maven Central if not cached yet."""
    if kafka_jars_present(settings):
        return settings.kafka_libs
    mvn = require_tool("mvn")
    pom = DEPLOY_LOCAL / "kafka-pom.xml"
    if not pom.is_file():
        raise SetupError(f"{pom} is missing: run Accord from its source checkout.")
    target = settings.kafka_libs
    target.parent.mkdir(parents=True, exist_ok=True)
    # Fetch into a scratch directory and rename, so an interrupted fetch never looks complete.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as scratch:
        libs = Path(scratch) / "libs"
        _run(
            [mvn, "-B", "-q", "-f", str(pom), f"-Dkafka.version={settings.kafka_version}",
             f"-Dlibs.dir={libs}", f"-Daccord.build.dir={Path(scratch) / 'build'}", "package"],
            f"Fetching Kafka {settings.kafka_version} jars with Maven",
        )
        if not (libs / f"kafka_2.13-{settings.kafka_version}.jar").is_file():
            raise SetupError(f"Maven finished but kafka_2.13-{settings.kafka_version}.jar is not in {libs}")
        if target.exists():
            shutil.rmtree(target)
        libs.rename(target)
    return target


def ensure_opa(settings: Settings) -> Path:
    """The OPA binary, built with `go install` (CGO disabled) if not cached yet."""
    binary = settings.opa_binary
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    go = require_tool("go")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent.parent, prefix=".build-") as scratch:
        env = dict(os.environ, CGO_ENABLED="0", GOBIN=scratch, GOFLAGS="-mod=mod")
        _run(
            [go, "install", f"github.com/open-policy-agent/opa@{settings.opa_version}"],
            f"Building OPA {settings.opa_version} with go install",
            env=env,
        )
        Path(scratch, "opa").rename(binary)
    return binary


def ensure_console_assets(settings: Settings) -> Path:
    """node_modules with govuk-frontend and axe-core (npm), fetched into the cache if not there yet."""
    from broker.config import AXE_CORE_VERSION, GOVUK_FRONTEND_VERSION

    target = settings.console_assets_dir
    if (target / "govuk-frontend" / "dist" / "govuk" / "govuk-frontend.min.css").is_file():
        return target
    npm = require_tool("npm")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Fetch into a scratch directory and rename, so an interrupted fetch never looks complete.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as scratch:
        _run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-save", "--prefix", scratch,
              f"govuk-frontend@{GOVUK_FRONTEND_VERSION}", f"axe-core@{AXE_CORE_VERSION}"],
             f"Fetching govuk-frontend {GOVUK_FRONTEND_VERSION} and axe-core {AXE_CORE_VERSION} with npm")
        if target.exists():
            shutil.rmtree(target)
        Path(scratch, "node_modules").rename(target)
    return target


def ensure_all(settings: Settings) -> tuple[Path, Path]:
    """Java present, Kafka jars fetched, OPA built: what `accord local up` needs before it starts anything."""
    require_tool("java")
    return ensure_kafka_jars(settings), ensure_opa(settings)
