"""How a source asks an outside HTTP API for pages: at most `per_second` requests a second, and a request that got
no answer, a server error (5xx), 408 or 429 asked again after a doubling backoff, or after the wait the server
named in `Retry-After` when it named one. Any other answer is final. Clock and sleep are passed in."""

from __future__ import annotations

import datetime as dt
import email.utils
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from broker.clock import Clock, system_clock
from broker.domain.pages import Answer
from broker.errors import ServiceError

MAX_RETRY_AFTER_S = 3600.0  # a server asking for more than an hour is answered after an hour


class JsonApi(Protocol):
    """An outside HTTP API (adapter: broker/adapters/json_api_http.py)."""

    def get(self, url: str, params: Sequence[tuple[str, str]], headers: Mapping[str, str]) -> Answer:
        """GET `url` with `params` added to its query; ServiceError when there is no answer (refused, reset,
        timed out, a name that does not resolve)."""


class GaveUp(ServiceError):
    """A request still failed after the last attempt; the source is read again from its stored position."""


@dataclass(frozen=True)
class Backoff:
    """Attempts per request, the waits between them doubling from `first_s` up to `max_s`."""

    max_attempts: int = 8
    first_s: float = 1.0
    max_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (1-based)."""
        return min(self.first_s * 2.0 ** min(attempt - 1, 64), self.max_s)

    @staticmethod
    def retried(status: int | None) -> bool:
        return status is None or status >= 500 or status in (408, 429)


def retry_after(value: str | None, now: dt.datetime) -> float | None:
    """The seconds a `Retry-After` header asks for (a number of seconds or an HTTP date), or None when it is absent
    or not understood (the backoff applies then)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER_S)


class RateLimit:
    """Spaces the starts of requests at least 1/`per_second` apart (retries count too)."""

    def __init__(self, per_second: float | None, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self._gap = 0.0 if not per_second else 1.0 / per_second
        self._monotonic, self._sleep = monotonic, sleep
        self._next: float | None = None

    def wait_turn(self) -> None:
        now = self._monotonic()
        if self._next is not None and now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self._gap


class PoliteClient:
    """`api` asked at the rate limit, with retries; `get` returns the first final answer (2xx, 3xx, a 4xx other than
    408/429) or raises GaveUp. `stop()` ends the waits between retries early (GaveUp)."""

    def __init__(self, api: JsonApi, limit: RateLimit, backoff: Backoff = Backoff(),
                 sleep: Callable[[float], object] = time.sleep, clock: Clock = system_clock,
                 stop: Callable[[], bool] = lambda: False,
                 on_warning: Callable[[str], None] = lambda message: None) -> None:
        self.api, self.limit, self.backoff = api, limit, backoff
        self._sleep, self._clock, self._stop, self._warn = sleep, clock, stop, on_warning
        self.requests = 0
        self.retries = 0

    def get(self, url: str, params: Sequence[tuple[str, str]], headers: Mapping[str, str]) -> Answer:
        last, attempt = "", 0
        for attempt in range(1, self.backoff.max_attempts + 1):
            self.limit.wait_turn()
            self.requests += 1
            try:
                answer = self.api.get(url, params, headers)
            except ServiceError as exc:
                status, last, wait = None, str(exc), self.backoff.delay(attempt)
            else:
                if not Backoff.retried(answer.status):
                    return answer
                status, last = answer.status, f"HTTP {answer.status}: {_start(answer.body)}"
                asked = retry_after(answer.headers.get("retry-after"), self._clock())
                wait = self.backoff.delay(attempt) if asked is None else asked
            if attempt == self.backoff.max_attempts or self._stop() or not Backoff.retried(status):
                break
            self.retries += 1
            self._warn(f"{url}: {last}; asking again in {wait:.1f}s (attempt {attempt + 1} of "
                       f"{self.backoff.max_attempts})")
            self._sleep(wait)
        raise GaveUp(f"{url} did not answer usefully after {attempt} attempt(s): {last}")


def _start(body: bytes) -> str:
    return " ".join(body[:200].decode("utf-8", "replace").split())
