"""The PolicyEngine port on a real OPA server, through opa-python-client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from opa_client import OpaClient
from opa_client.errors import ConnectionsError, RegoParseError

from broker.errors import ConfigError, PolicyEngineError
from broker.ports import Evaluation


class OpaPolicyEngine:
    """Talks to OPA's REST API (v1) at `url`, e.g. http://127.0.0.1:8181."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"OPA URL {url!r} is not an http(s) URL (set ACCORD_OPA_URL=http://host:port)")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.url = url.rstrip("/")
        self._client = OpaClient(
            host=parts.hostname, port=port, ssl=parts.scheme == "https", timeout=timeout_s
        )

    def close(self) -> None:
        self._client.close_connection()

    def healthy(self) -> bool:
        return bool(self._client.check_health())

    def ready(self) -> bool:
        """`GET /health?bundles`: 200 only once OPA has verified and activated its bundles."""
        return bool(self._client.check_health(diagnostic_url=f"{self.url}/health?bundles"))

    def put_policy(self, module_id: str, source: str) -> None:
        """One module over REST. Accord's own policies come from the signed bundle: OPA refuses this under its roots."""
        try:
            # rego_compat=False: Accord's policies are Rego v1; never let the client rewrite them.
            self._client.update_policy_from_string(source, module_id, rego_compat=False)
        except RegoParseError as exc:
            raise PolicyEngineError(f"OPA refused policy {module_id!r}: {exc}") from exc
        except (ConnectionsError, requests.RequestException) as exc:
            raise PolicyEngineError(f"OPA at {self.url} unreachable: {exc}") from exc

    def put_data(self, path: str, document: Mapping[str, Any]) -> None:
        try:
            self._client.update_or_create_data(dict(document), path.strip("/"))
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
            answer = self._client.query_rule(dict(input_doc), package, name)
        except requests.HTTPError as exc:
            body = exc.response.text if exc.response is not None else str(exc)
            raise PolicyEngineError(f"OPA could not evaluate {rule!r}: {body}") from exc
        except (ConnectionsError, requests.RequestException) as exc:
            raise PolicyEngineError(f"OPA at {self.url} unreachable: {exc}") from exc
        decision_id = answer.get("decision_id")
        return Evaluation(answer.get("result"), decision_id if isinstance(decision_id, str) and decision_id else None)
