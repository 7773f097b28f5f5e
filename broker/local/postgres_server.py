"""A PostgreSQL server from Debian's `postgresql` package on loopback, in its own data directory: for the sinks'
tests and the demo (`accord local up --postgres`).

PostgreSQL refuses to run as root, so when Accord runs as root the server (and `initdb`) run as the `postgres`
user the package creates, through `setpriv`, which execs in place: the pid in the pid file is the server's own.
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from broker.errors import ServiceStartError, SetupError
from broker.local import processes, toolchain
from broker.security.secrets import write_private

MARKER = "postgres"
DATABASE = "accord"
USER = "accord"
DEBIAN_BINARIES = Path("/usr/lib/postgresql")


@dataclass(frozen=True)
class PostgresLayout:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "postgres.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "postgres.pid"


def password_file(secrets_dir: Path) -> Path:
    return secrets_dir / "postgres" / f"{USER}.password"


def dsn(port: int) -> str:
    """The address of the local database (the password is kept in `password_file`, never in the address)."""
    return f"postgresql://{USER}@127.0.0.1:{port}/{DATABASE}"


def find_binaries(base: Path = DEBIAN_BINARIES) -> Path | None:
    """The newest `/usr/lib/postgresql/<version>/bin` holding both `initdb` and `postgres`, if any."""
    found = [p / "bin" for p in base.glob("*")
             if (p / "bin" / "postgres").is_file() and (p / "bin" / "initdb").is_file()]
    numbered = [p for p in found if p.parent.name.isdigit()]
    return max(numbered, key=lambda p: int(p.parent.name)) if numbered else None


def ensure_binaries(base: Path = DEBIAN_BINARIES) -> Path:
    """PostgreSQL's bin directory, installing Debian's `postgresql` package first when missing (as root only)."""
    found = find_binaries(base)
    if found is not None:
        return found
    toolchain.apt_install("postgresql", "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/postgres): "
                          "install Debian's `postgresql` package (apt-get install postgresql) and try again")
    found = find_binaries(base)
    if found is None:
        raise SetupError("apt-get installed postgresql but no /usr/lib/postgresql/<version>/bin/postgres appeared")
    return found


def _as_server_user(args: list[str]) -> list[str]:
    """`args` run as the `postgres` user when this process is root (the server refuses root)."""
    if os.geteuid() != 0:
        return args
    # The state directory may sit under directories only root enters (a home, a test's temporary directory):
    # the server keeps the right to pass through them (dac_read_search), not to read or write what they hold.
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search", "--", *args]


def _hand_over(paths: list[Path]) -> None:
    """Give the server's own directories to the `postgres` user when running as root."""
    if os.geteuid() != 0:
        return
    try:
        account = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise SetupError("running as root needs the `postgres` user (made by Debian's postgresql package)") from exc
    for path in paths:
        os.chown(path, account.pw_uid, account.pw_gid)


def _init(bin_dir: Path, layout: PostgresLayout, password: str) -> None:
    """`initdb` a new data directory whose superuser `accord` logs in with `password` (scram-sha-256)."""
    for path in (layout.root, layout.sockets):
        path.mkdir(parents=True, exist_ok=True)
    _hand_over([layout.root, layout.sockets])
    pwfile = layout.root / ".initdb-password"
    write_private(pwfile, password)
    _hand_over([pwfile])
    try:
        proc = subprocess.run(
            _as_server_user([str(bin_dir / "initdb"), "-D", str(layout.data), "-U", USER, f"--pwfile={pwfile}",
                             "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"]),
            capture_output=True, text=True, check=False)
    finally:
        pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise ServiceStartError(f"initdb failed (exit {proc.returncode})", (proc.stdout + proc.stderr)[-2000:])


def _ready(bin_dir: Path, port: int) -> bool:
    proc = subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
                          capture_output=True, check=False)
    return proc.returncode == 0


def _create_database(bin_dir: Path, port: int, password: str) -> None:
    env = dict(os.environ, PGPASSWORD=password)
    proc = subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 and "already exists" not in proc.stderr:
        raise ServiceStartError(f"createdb {DATABASE} failed (exit {proc.returncode})", proc.stderr[-2000:])


def start(bin_dir: Path, layout: PostgresLayout, secrets_dir: Path, timeout_s: float,
          port: int | None = None) -> tuple[int, str]:
    """Start PostgreSQL on 127.0.0.1 (`port`, default a free one), initialising its data directory on first use;
    return (pid, dsn) once it accepts connections and the `accord` database exists."""
    password_path = password_file(secrets_dir)
    if not (layout.data / "PG_VERSION").is_file():
        write_private(password_path, secrets.token_urlsafe(32))
        _init(bin_dir, layout, password_path.read_text().strip())
    password = password_path.read_text().strip()
    port = port or processes.free_port()
    layout.log.parent.mkdir(parents=True, exist_ok=True)
    _hand_over([layout.log.parent])
    args = _as_server_user([str(bin_dir / "postgres"), "-D", str(layout.data), "-p", str(port),
                            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={layout.sockets}"])
    pid = processes.start_detached(args, layout.log, layout.pid_file)
    deadline = time.monotonic() + timeout_s
    while not _ready(bin_dir, port):
        if not processes.alive(pid, MARKER):
            raise ServiceStartError("PostgreSQL exited during start-up", processes.tail(layout.log))
        if time.monotonic() > deadline:
            stop(pid)
            raise ServiceStartError(f"PostgreSQL did not accept connections within {timeout_s:.0f}s",
                                    processes.tail(layout.log))
        time.sleep(0.1)
    _create_database(bin_dir, port, password)
    return pid, dsn(port)


def stop(pid: int | None) -> bool:
    """Fast shutdown (SIGINT: sessions are ended, not waited for), then processes.stop's TERM and KILL."""
    if not processes.alive(pid, MARKER):
        return False
    assert pid is not None
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return True
    return processes.stop(pid, MARKER)
