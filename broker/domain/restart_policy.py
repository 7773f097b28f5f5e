"""When a supervisor starts a crashed service again: at once the first time, then after exponentially longer
waits while it keeps crashing (or failing to start), up to a cap; a service that stayed up for a healthy period is
forgiven its earlier crashes. Pure: times are seconds on a monotonic clock that the caller passes in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """The restart schedule: 0, first_s, first_s*factor, ... never more than cap_s; reset after healthy_s up."""

    first_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 30.0
    healthy_s: float = 30.0

    def __post_init__(self) -> None:
        if self.first_s <= 0 or self.factor < 1 or self.cap_s < self.first_s or self.healthy_s <= 0:
            raise ValueError(f"a backoff needs 0 < first_s <= cap_s, factor >= 1 and healthy_s > 0, not {self}")

    def delay(self, failures: int) -> float:
        """The wait before the restart that follows the `failures`-th failure in a row (1: the first)."""
        if failures <= 1:
            return 0.0
        # failures - 2 grows without bound for a service that never starts; stop multiplying at the cap.
        wait = self.first_s
        for _ in range(failures - 2):
            wait *= self.factor
            if wait >= self.cap_s:
                return self.cap_s
        return min(wait, self.cap_s)


@dataclass
class RestartTracker:
    """One supervised service: whether a restart is due, and what its restarts were."""

    policy: Backoff
    failures: int = 0            # crashes and failed starts since it was last up for a healthy period
    restarts: int = 0            # successful restarts, ever
    last_reason: str = ""        # why it was last restarted, or why the last start failed
    up_since: float | None = None
    next_try: float | None = None  # when it is down: when the next start is due

    def observe(self, now: float, alive: bool, why_down: str = "") -> bool:
        """Record what was seen at `now`; True when the service is down and a start is due now."""
        if alive:
            if self.up_since is None:
                self.up_since = now
            elif now - self.up_since >= self.policy.healthy_s:
                self.failures = 0
            self.next_try = None
            return False
        if self.next_try is None:  # found down: a new failure
            self.up_since = None
            self.failures += 1
            self.next_try = now + self.policy.delay(self.failures)
            self.last_reason = why_down or self.last_reason
        return now >= self.next_try

    def started(self, now: float) -> None:
        """A start succeeded at `now`: up again, its earlier failures remembered until it has been up long enough."""
        self.restarts += 1
        self.up_since, self.next_try = now, None

    def failed(self, now: float, why: str) -> None:
        """A start failed at `now`: one more failure, the next attempt later."""
        self.failures += 1
        self.next_try = now + self.policy.delay(self.failures)
        self.last_reason = why

    def wait_s(self, now: float) -> float | None:
        """Seconds until the next start is due (None: it is up or nothing is scheduled)."""
        return None if self.next_try is None else max(0.0, self.next_try - now)
