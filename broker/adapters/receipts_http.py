"""A sink's Receipts port over Accord's API: signs each claim with the body's receipt key and POSTs it to
`/deliveries/{stream}/receipts` with the body's API token."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.domain.receipts import Claim, ReceiptError, fingerprint, sign
from broker.domain.topics import role_delivery_prefix
from broker.errors import ServiceError

SERVER_ERROR = 500


class HttpReceipts:
    def __init__(self, api_url: str, token: Callable[[], str], key: Ed25519PrivateKey, body: str, role: str,
                 timeout_s: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(base_url=api_url, timeout=timeout_s, transport=transport)
        self._token, self._key, self._prefix = token, key, role_delivery_prefix(body, role)
        self.key_id = fingerprint(key.public_key())

    def send(self, claim: Claim) -> None:
        stream = claim.topic.removeprefix(self._prefix)
        body = {**claim.to_json(), "signature": sign(self._key, claim)}
        try:
            response = self._client.post(f"/deliveries/{quote(stream, safe='')}/receipts", json=body,
                                         headers={"Authorization": f"Bearer {self._token()}"})
        except httpx.HTTPError as exc:
            raise ServiceError(f"Accord's API did not answer ({exc})") from exc
        if response.status_code >= SERVER_ERROR or response.status_code in (401, 429):
            # 401: a token can expire and be replaced on disk; the same receipt may pass later.
            raise ServiceError(f"Accord's API answered {response.status_code}: {_message(response)}")
        if response.is_error:
            raise ReceiptError(response.status_code, _message(response))

    def close(self) -> None:
        self._client.close()


def _message(response: httpx.Response) -> str:
    try:
        answer = response.json()
    except ValueError:
        return response.text.strip()[:200]
    return str(answer.get("error") or answer.get("detail")) if isinstance(answer, dict) else str(answer)[:200]
