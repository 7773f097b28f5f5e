"""A source's Publisher port over Accord's API: `POST /streams/{stream}/records` with the publisher's API token and
the batch's Idempotency-Key, so that a batch sent again (after a timeout or a restart) is published once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from broker.domain.publishing import PublishOutcome
from broker.errors import AccordError, ServiceError

SERVER_ERROR = 500
RETRIED = (401, 408, 425, 429)  # a token replaced on disk, a slow or busy API: the same batch may pass later


class PublishRefused(AccordError):
    """The API refused the request itself (not a record of it): sending it again would be refused again."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"Accord's API refused the batch ({status}): {message}")


class HttpPublisher:
    def __init__(self, api_url: str, token: Callable[[], str], timeout_s: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(base_url=api_url, timeout=timeout_s, transport=transport)
        self._token = token

    def publish(self, stream: str, records: Sequence[Mapping[str, Any]], idempotency_key: str) -> list[PublishOutcome]:
        try:
            response = self._client.post(
                f"/streams/{quote(stream, safe='')}/records", json={"records": list(records)},
                headers={"Authorization": f"Bearer {self._token()}", "Idempotency-Key": idempotency_key})
        except httpx.HTTPError as exc:
            raise ServiceError(f"Accord's API did not answer ({exc})") from exc
        if response.status_code >= SERVER_ERROR or response.status_code in RETRIED:
            raise ServiceError(f"Accord's API answered {response.status_code}: {_message(response)}")
        if response.is_error:
            raise PublishRefused(response.status_code, _message(response))
        try:
            outcomes = response.json()["outcomes"]
            return [PublishOutcome("accepted" if o["status"] == "accepted" else "quarantined",
                                   tuple(str(r.get("message") or r.get("rule")) for r in o.get("reasons", [])))
                    for o in outcomes]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ServiceError(f"Accord's API answered what is not a publish answer ({exc})") from exc

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpPublisher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _message(response: httpx.Response) -> str:
    try:
        answer = response.json()
    except ValueError:
        return response.text.strip()[:200]
    return str(answer.get("error") or answer.get("detail")) if isinstance(answer, dict) else str(answer)[:200]
