"""The governance service's HTTP API as a client (the CLI and the demo use it): one bearer token per call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from broker.errors import ServiceError

CONNECT_RETRIES = 3  # httpx tries to connect again at once, after 0.5 s and after 1 s (the same address)


class Answer(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    @property
    def is_error(self) -> bool: ...

    def json(self) -> Any: ...


class HttpClient(Protocol):
    """What the client needs of an HTTP client: httpx's, or a test's (an app's TestClient)."""

    def request(self, method: str, url: str, *, json: Any = ..., params: Any = ..., headers: Any = ...) -> Answer: ...

    def close(self) -> None: ...


class GovernanceApiError(ServiceError):
    """The governance API refused a call (`status` its HTTP status) or did not answer (`status` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class GovernanceClient:
    """Calls the governance API at `url` (e.g. http://127.0.0.1:8090) and returns its JSON answers; `client`
    replaces the network (tests pass an httpx client on a mock transport or the app's TestClient)."""

    def __init__(self, url: str = "", timeout_s: float = 30.0, *, client: HttpClient | None = None) -> None:
        self._client: HttpClient = client if client is not None else httpx.Client(
            base_url=url, timeout=timeout_s, transport=httpx.HTTPTransport(retries=CONNECT_RETRIES))

    def __enter__(self) -> GovernanceClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def call(self, method: str, path: str, token: str, body: Mapping[str, Any] | None = None,
             params: Mapping[str, str] | None = None) -> Any:
        """The API's JSON answer; GovernanceApiError with the API's own message when it refuses."""
        try:
            response = self._client.request(method, path, json=body, params=params,
                                            headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise GovernanceApiError(0, f"the governance API did not answer ({exc}); is it running? "
                                        "`accord local status` shows it") from exc
        if response.is_error:
            raise GovernanceApiError(response.status_code, _message(response))
        return response.json()


def _message(response: Answer) -> str:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer["error"])
    return f"HTTP {response.status_code} from the governance API: {response.text.strip()[:200]}"


class AccessRequests:
    """The access-request calls of the governance API (`/requests`), each acting with `token`."""

    def __init__(self, client: GovernanceClient) -> None:
        self._client = client

    def create(self, token: str, form: Mapping[str, Any]) -> dict[str, Any]:
        """Make a request: template, purpose, justification, duration, fields and optionally legal_basis, areas,
        backfill (the API's RequestIn)."""
        return dict(self._client.call("POST", "/requests", token, form))

    def listed(self, token: str, state: str | None = None) -> list[dict[str, Any]]:
        params = None if state is None else {"state": state}
        return list(self._client.call("GET", "/requests", token, params=params)["requests"])

    def show(self, token: str, ident: str) -> dict[str, Any]:
        return dict(self._client.call("GET", f"/requests/{ident}", token))

    def approve(self, token: str, ident: str, reason: str) -> dict[str, Any]:
        return dict(self._client.call("POST", f"/requests/{ident}/approvals", token, {"reason": reason}))

    def refuse(self, token: str, ident: str, reason: str) -> dict[str, Any]:
        return dict(self._client.call("POST", f"/requests/{ident}/refusal", token, {"reason": reason}))
