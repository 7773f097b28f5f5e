"""The webhook sink's Endpoint port over HTTP: POST a signed batch to the subscriber's URL, say what it answered.

Redirects are not followed (a receiver that moved says so with a 3xx, which the sink does not retry) and proxies
from the environment are not used: the records go to the URL the subscriber configured, nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from broker.errors import ServiceError

ANSWER_CHARS = 300


class HttpEndpoint:
    def __init__(self, url: str, timeout_s: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout_s, transport=transport, trust_env=False, follow_redirects=False)

    def post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        """The status and the start of the answer's text (what a receiver says of a refusal); ServiceError when
        there is no answer (refused, reset, timed out, a name that does not resolve)."""
        try:
            response = self._client.post(self.url, content=body, headers=dict(headers))
        except httpx.TransportError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise ServiceError(f"no answer from {self.url} ({detail})") from None
        answer = " ".join(response.text[:ANSWER_CHARS].split())
        return response.status_code, answer

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpEndpoint:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
