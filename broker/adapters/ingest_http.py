"""Accord's ingest API as a drill publishes through it: `POST /streams/{stream}/records` with the publisher's token,
answering each record's outcome with where it was written (topic, partition, offset)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from broker.errors import ServiceError


class IngestApi:
    def __init__(self, api_url: str, timeout_s: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(base_url=api_url, timeout=timeout_s, transport=transport)

    def publish(self, stream: str, token: str, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Each record's outcome; ServiceError naming the API's answer when the request itself is refused."""
        body = {"records": json.loads(json.dumps(list(records), default=str))}   # dates as ISO 8601 strings
        try:
            response = self._client.post(f"/streams/{quote(stream, safe='')}/records", json=body,
                                         headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise ServiceError(f"Accord's API did not answer ({exc}); is it running?") from exc
        if response.is_error:
            raise ServiceError(f"Accord's API refused to publish to {stream} ({response.status_code}): "
                               f"{response.text.strip()[:300]}")
        outcomes = response.json().get("outcomes")
        if not isinstance(outcomes, list):
            raise ServiceError(f"Accord's API answered what is not a publish answer: {response.text[:200]}")
        return [dict(o) for o in outcomes]

    def close(self) -> None:
        self._client.close()
