"""The PolicyEngine port on a real OPA server, through opa-python-client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from opa_client import OpaClient
from opa_client.errors import ConnectionsError, RegoParseError

from broker.domain.messages import Evaluation
from broker.errors import ConfigError, PolicyEngineError

T = TypeVar("T")
UNAUTHORIZED = "unauthorized"  # OPA's error code when its system policy refuses a call
RECONNECT_PAUSES_S = (0.2, 0.8)  # before each new connection when OPA could not be reached


class OpaPolicyEngine:
    """Talks to OPA's REST API (v1) at `url`, e.g. http://127.0.0.1:8181.

    `token_file` holds the bearer token for an OPA that authenticates its callers (services/opa_tokens.py). It is
    read again when OPA refuses the token, so a running service follows `accord credentials rotate-opa-tokens`.

    Safe to call from several threads at once (a gate asks for its plans concurrently): each call takes a
    connection no other call is using, from a set that grows to the number of calls made at once.
    """

    def __init__(self, url: str, timeout_s: float = 5.0, token_file: Path | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"OPA URL {url!r} is not an http(s) URL (set ACCORD_OPA_URL=http://host:port)")
        self.url = url.rstrip("/")
        self._host, self._port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl, self._timeout_s, self._token_file = parts.scheme == "https", timeout_s, token_file
        self._token = self._read_token()
        self._lock = threading.Lock()
        # Connections no call holds now, each with the token it was made with; the first made now, so a bad address
        # or token file fails here rather than at the first call.
        self._idle: list[tuple[OpaClient, str | None]] = [(self._connect(self._token), self._token)]
        self._closed = False

    def _read_token(self) -> str | None:
        return read_token(self._token_file) if self._token_file is not None else None

    def _connect(self, token: str | None) -> OpaClient:
        return OpaClient(host=self._host, port=self._port, ssl=self._ssl, timeout=self._timeout_s, token=token)

    @contextmanager
    def _held(self) -> Iterator[_Held]:
        """A connection for one call (which may replace it), back to the idle set after. One made with a token
        rotated out since is replaced first."""
        with self._lock:
            client, token = self._idle.pop() if self._idle else (None, None)
            wanted = self._token
        if client is None or token != wanted:
            if client is not None:
                client.close_connection()
            client, token = self._connect(wanted), wanted
        held = _Held(client, token)
        try:
            yield held
        finally:
            with self._lock:
                if self._closed:
                    held.client.close_connection()
                else:
                    self._idle.append((held.client, held.token))

    def _call(self, what: str, call: Callable[[OpaClient], T]) -> T:
        """`call` on a connection; once more with the token file's new token if OPA refused the one it was made
        with (calls refused at the same time each compare with their own: all follow one rotation)."""
        with self._held() as held:
            try:
                return self._reconnecting(held, call)
            except (RegoParseError, requests.HTTPError) as exc:
                if not _unauthorized(exc):
                    raise
                token = self._read_token()
                if token == held.token:
                    raise PolicyEngineError(
                        f"OPA at {self.url} refused Accord's token for {what} ({self._token_file or 'no token file'})"
                        ": it serves a bundle built with other tokens. Run `accord local up` (or point "
                        "ACCORD_OPA_TOKEN_FILE at this OPA's token)") from None
                with self._lock:
                    self._token = token
                held.client.close_connection()
                held.client, held.token = self._connect(token), token
                return call(held.client)

    def _reconnecting(self, held: _Held, call: Callable[[OpaClient], T]) -> T:
        """`call`, tried again on a fresh connection to the configured address when OPA could not be reached (a
        restarted OPA keeps its address: `accord local up` keeps ports), for about a second before giving up."""
        for pause_s in RECONNECT_PAUSES_S:
            try:
                return call(held.client)
            except (ConnectionsError, requests.ConnectionError):
                time.sleep(pause_s)
                held.client.close_connection()
                held.client = self._connect(held.token)
        return call(held.client)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for client, _ in idle:
            client.close_connection()

    def healthy(self) -> bool:
        with self._held() as held:
            return bool(held.client.check_health())

    def ready(self) -> bool:
        """`GET /health?bundles`: 200 only once OPA has verified and activated its bundles."""
        with self._held() as held:
            return bool(held.client.check_health(diagnostic_url=f"{self.url}/health?bundles"))

    def put_policy(self, module_id: str, source: str) -> None:
        """One module over REST. Accord's own policies come from the signed bundle: OPA refuses this under its roots."""
        try:
            # rego_compat=False: Accord's policies are Rego v1; never let the client rewrite them.
            self._call(f"policy {module_id}",
                       lambda c: c.update_policy_from_string(source, module_id, rego_compat=False))
        except RegoParseError as exc:
            raise PolicyEngineError(f"OPA refused policy {module_id!r}: {exc}") from exc
        except (ConnectionsError, requests.RequestException) as exc:
            raise PolicyEngineError(f"OPA at {self.url} unreachable: {exc}") from exc

    def put_data(self, path: str, document: Mapping[str, Any]) -> None:
        try:
            self._call(f"data {path}", lambda c: c.update_or_create_data(dict(document), path.strip("/")))
        except RegoParseError as exc:
            raise PolicyEngineError(f"OPA refused data at {path!r}: {exc}") from exc
        except (ConnectionsError, requests.RequestException) as exc:
            raise PolicyEngineError(f"OPA at {self.url} unreachable: {exc}") from exc

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> Any:
        return self.evaluate_with_id(rule, input_doc).result

    def evaluate_with_id(self, rule: str, input_doc: Mapping[str, Any]) -> Evaluation:
        """OPA answers with a `decision_id` only while decision logging is on (`--set decision_logs.console=true`
        or a decision_logs plugin configuration); otherwise the id is None."""
        package, _, name = rule.rpartition(".")
        try:
            answer = self._call(rule, lambda c: c.query_rule(dict(input_doc), package, name))
        except requests.HTTPError as exc:
            body = exc.response.text if exc.response is not None else str(exc)
            raise PolicyEngineError(f"OPA could not evaluate {rule!r}: {body}") from exc
        except (ConnectionsError, requests.RequestException) as exc:
            raise PolicyEngineError(f"OPA at {self.url} unreachable: {exc}") from exc
        decision_id = answer.get("decision_id")
        return Evaluation(answer.get("result"), decision_id if isinstance(decision_id, str) and decision_id else None)


@dataclass
class _Held:
    """A connection one call holds, and the token it was made with."""

    client: OpaClient
    token: str | None


def read_token(path: Path) -> str | None:
    """The token in `path`; None when there is no file (an OPA without authentication needs none)."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not token:
        raise ConfigError(f"{path} is empty: run `accord credentials rotate-opa-tokens`")
    return token


def _unauthorized(exc: Exception) -> bool:
    if isinstance(exc, requests.HTTPError):
        return exc.response is not None and exc.response.status_code == 401
    return getattr(exc, "expression", None) == UNAUTHORIZED
