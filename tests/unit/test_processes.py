from __future__ import annotations

import sys
import time
from pathlib import Path

from broker.local import processes


def test_free_port_is_not_listening() -> None:
    assert not processes.port_in_use(processes.free_port())


def test_start_alive_stop(tmp_path: Path) -> None:
    pid = processes.start_detached(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)", "accord-test-sleeper"],
        tmp_path / "logs" / "p.log", tmp_path / "p.pid",
    )
    assert processes.read_pid(tmp_path / "p.pid") == pid
    deadline = time.monotonic() + 10
    while "ready" not in processes.tail(tmp_path / "logs" / "p.log") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert processes.alive(pid, "accord-test-sleeper")
    assert not processes.alive(pid, "some-other-program")
    assert processes.stop(pid, "accord-test-sleeper", grace_s=5)
    assert not processes.alive(pid, "accord-test-sleeper")
    assert processes.stop(pid, "accord-test-sleeper") is False
    assert "ready" in processes.tail(tmp_path / "logs" / "p.log")


def test_process_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    pid = processes.start_detached([sys.executable, "-c", code, "accord-stubborn"], tmp_path / "s.log",
                                   tmp_path / "s.pid")
    assert processes.stop(pid, "accord-stubborn", grace_s=0.5)
    assert not processes.alive(pid, "accord-stubborn")


def test_tail_of_missing_log_says_so(tmp_path: Path) -> None:
    assert "no log" in processes.tail(tmp_path / "nothing.log")


def test_read_pid_handles_garbage(tmp_path: Path) -> None:
    (tmp_path / "x.pid").write_text("not a pid")
    assert processes.read_pid(tmp_path / "x.pid") is None
    assert processes.read_pid(tmp_path / "missing.pid") is None
