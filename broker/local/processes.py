"""Detached child processes with pid and log files: start, probe, tail, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_detached(args: Sequence[str], log: Path, pid_file: Path, env: dict[str, str] | None = None) -> int:
    """Start `args` in its own session (it outlives this process), output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = list(args)
    # posix_spawn rather than Popen: the child is meant to outlive this process, and a Popen object
    # would complain when garbage-collected while its child still runs.
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    pid = os.posix_spawnp(argv[0], argv, env if env is not None else dict(os.environ), file_actions=actions,
                          setsid=True)
    pid_file.write_text(str(pid))
    return pid


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def alive(pid: int | None, marker: str) -> bool:
    """True if `pid` runs and its command line contains `marker` (guards against reused pids)."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    # A zombie has exited; only its parent has not collected it yet.
    if state == "Z":
        return False
    # Right after exec the kernel may not have published the new command line yet: it reads as empty.
    return cmdline == "" or marker in cmdline


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(pid: int | None, marker: str, grace_s: float = 30.0) -> bool:
    """SIGTERM the process group, SIGKILL after `grace_s`. True if something was running."""
    if not alive(pid, marker):
        return False
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid, marker):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for _ in range(50):
        _reap(pid)
        if not alive(pid, marker):
            break
        time.sleep(0.1)
    return True


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.strip().splitlines()[-lines:])
