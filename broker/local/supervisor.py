"""`accord local supervise`: restarts a crashed local service on its kept port, with backoff.

One process per state directory, started by `accord local up` and stopped first by `accord local down`. Every
second it looks at each managed service (Kafka, OPA, PostgreSQL once started, the registry, the API, the
governance service, the console, the gate worker) in that order; one found without a live process is started
again as `up` would start it, at once the first time and after longer waits while it keeps dying
(domain/restart_policy.py). Each restart and failed start is logged, and the restarts and their last reason are
kept in a state file that `accord local status` shows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import time
from collections.abc import Callable
from typing import Protocol

from broker.domain.restart_policy import Backoff, RestartTracker
from broker.errors import AccordError
from broker.local.supervisor_files import SupervisorLayout

Log = Callable[[str], None]


class Supervised(Protocol):
    """What the supervisor needs of a stack (LocalStack has it)."""

    @property
    def supervisor(self) -> SupervisorLayout: ...

    def managed(self) -> list[str]: ...

    def pid(self, name: str) -> int | None: ...

    def running(self, name: str) -> bool: ...

    def restart(self, name: str) -> str: ...


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(number).name}"
        return f"killed by signal {number}"
    return f"exited with status {os.WEXITSTATUS(status)}"


class Supervisor:
    """The restart loop over one stack; `tick` is one look at every service (a test can drive it)."""

    def __init__(self, stack: Supervised, policy: Backoff, log: Log,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stack, self.policy, self.log, self.clock = stack, policy, log, clock
        self.trackers: dict[str, RestartTracker] = {}
        self._exits: dict[int, str] = {}  # how children this process started ended, by pid

    def _reap(self, pid: int | None) -> None:
        """Collect `pid` if it is a child of this process (a service it restarted) that ended, and how it ended.
        Only the services' own pids: this process may be a test's, whose other children are not its to collect."""
        if pid is None:
            return
        try:
            ended, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if ended == pid:
            self._exits[pid] = _exit_text(status)

    def tick(self) -> None:
        for name in self.stack.managed():
            tracker = self.trackers.setdefault(name, RestartTracker(self.policy))
            now, pid = self.clock(), self.stack.pid(name)
            self._reap(pid)
            alive = self.stack.running(name)
            # The holds are read after the death is seen: a hold made before a service was stopped on purpose is
            # then always found (read once per tick, a hold made just after the read was missed by that tick).
            if not alive and name in self.stack.supervisor.held():
                tracker.next_try = None  # left alone on purpose: neither a failure nor due
                continue
            why = f"pid {pid} {self._exits.pop(pid, 'gone')}" if pid is not None else "no process"
            if not tracker.observe(now, alive, why):
                continue
            self.log(f"{name}: {tracker.last_reason}; starting it again (restart {tracker.restarts + 1})")
            started = self.clock()
            try:
                where = self.stack.restart(name)
            except AccordError as exc:
                first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                tracker.failed(self.clock(), f"start failed: {first_line}")
                self.log(f"{name}: start failed ({exc}); next attempt in {tracker.wait_s(self.clock()):.0f} s")
                continue
            tracker.started(self.clock())
            self.log(f"{name}: up again at {where} after {self.clock() - started:.1f} s")
        self.stack.supervisor.write_state({
            "pid": os.getpid(),
            "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "services": {name: {"restarts": t.restarts, "last_reason": t.last_reason, "failures": t.failures,
                                "next_start_in_s": t.wait_s(self.clock())}
                         for name, t in self.trackers.items()},
        })

    def run(self, interval_s: float = 1.0) -> None:
        def stop(signum: int, _frame: object) -> None:
            # A restart in progress holds the stack's lock for up to the start timeout: end now, as `down` wants.
            self.log(f"stopped by {signal.Signals(signum).name}")
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, stop)
        self.log(f"supervising {', '.join(self.stack.managed())} (backoff {self.policy})")
        while True:
            try:
                self.tick()
            except (AccordError, OSError) as exc:  # a look that failed is retried on the next tick
                self.log(f"look at the services failed: {exc}")
            time.sleep(interval_s)


def stderr_log(line: str) -> None:
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    print(f"{stamp} {line}", flush=True)
