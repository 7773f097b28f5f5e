"""The API when what it publishes through does not answer (Kafka restarting, the registry waiting on it): 503 with
Retry-After, so a publisher retries; the registry refusing outright is a bad gateway, not a server error."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.api.app import create_api_app
from broker.errors import RegistryError, ServiceError
from tests.unit.auth_fakes import bearer, guard


class FailingIngest:
    """An ingest whose every use fails with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def schema(self, stream: str) -> Any:
        raise self.error


@pytest.mark.parametrize(("error", "status"), [
    (ServiceError("publishing to ingest.ukhsa.positive-tests failed: KafkaTimeoutError\ntraceback"), 503),
    (RegistryError(0, -1, "POST http://127.0.0.1:1/subjects/x/versions: ReadTimeout: timed out"), 503),
    (RegistryError(503, 50001, "reading the end of _accord.schemas failed"), 503),
    (RegistryError(409, 409, "Schema being registered is incompatible with an earlier schema"), 502),
])
def test_a_publish_that_cannot_reach_kafka_or_the_registry_is_unavailable(error: Exception, status: int) -> None:
    app = create_api_app(FailingIngest(error), lambda s, n: [], guard=guard())  # type: ignore[arg-type]
    with TestClient(app) as client:
        answer = client.post("/streams/ukhsa.positive-tests/records", json={"records": []},
                             headers=bearer("ukhsa", "ig-lead"))
    assert answer.status_code == status, answer.text
    assert answer.json() == {"error": str(error).splitlines()[0]}
    assert ("retry-after" in answer.headers) == (status == 503)
