"""Where the supervisor of one state directory keeps its pid, log, state (restarts by service) and holds; how
`accord local up` starts it and `accord local down` stops it."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.local import processes

MARKER = "broker local supervise"


@dataclass(frozen=True)
class SupervisorLayout:
    root: Path

    @property
    def pid_file(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "supervisor.log"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def holds_file(self) -> Path:
        return self.root / "holds.json"

    def pid(self) -> int | None:
        return processes.read_pid(self.pid_file)

    def running(self) -> bool:
        return processes.alive(self.pid(), MARKER)

    def start(self, env: dict[str, str]) -> int:
        """Start `accord local supervise` detached (it outlives the command that started it) unless it runs."""
        pid = self.pid()
        if pid is not None and processes.alive(pid, MARKER):
            return pid
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file.unlink(missing_ok=True)
        return processes.start_detached([sys.executable, "-m", "broker", "local", "supervise"], self.log,
                                        self.pid_file, env=dict(os.environ) | env)

    def stop(self) -> bool:
        stopped = processes.stop(self.pid(), MARKER)
        self.pid_file.unlink(missing_ok=True)
        return stopped

    def clear(self) -> None:
        for path in (self.state_file, self.holds_file):
            path.unlink(missing_ok=True)

    # -- what it reports ---------------------------------------------------------------------
    def read_state(self) -> dict[str, Any] | None:
        """What the supervisor last wrote (restarts and last reason by service), None if it never ran here."""
        try:
            data = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def write_state(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_suffix(".tmp")
        partial.write_text(json.dumps(state, indent=2))
        partial.replace(self.state_file)  # readers never see half a file

    # -- holds: services it leaves alone for a while -----------------------------------------
    def hold(self, name: str, seconds: float) -> None:
        """Leave `name` alone (not restarted if it stops) for `seconds` from now; 0 lifts a hold."""
        holds = self._holds()
        holds[name] = time.time() + seconds
        holds = {n: until for n, until in holds.items() if until > time.time()}
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.holds_file.with_suffix(".tmp")
        partial.write_text(json.dumps(holds))
        partial.replace(self.holds_file)

    def held(self) -> set[str]:
        now = time.time()
        return {name for name, until in self._holds().items() if until > now}

    def _holds(self) -> dict[str, float]:
        try:
            data = json.loads(self.holds_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def supervisor_layout(state_root: Path) -> SupervisorLayout:
    return SupervisorLayout(state_root / "supervisor")
