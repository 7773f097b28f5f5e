"""The gate's own acceptance tests (test_gate.py) again, with the data path on kafka-python instead of the default
librdkafka (confluent-kafka): each subscriber receives exactly its view, live, on either transport.
(test_gate_fail_closed.py and test_gate_failover.py run each of their tests on both transports.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from broker.adapters.kafka_transactions import TransactionalStage
from broker.local.stack import Endpoints
from broker.runtime.gate import GateThread
from tests.integration.gate_support import start_gate
from tests.integration.test_gate import (
    test_a_national_day_over_every_english_authority_reaches_each_council_exactly,
    test_each_subscriber_receives_exactly_its_view,
    test_revocation_stops_delivery_of_records_published_after_it,
)

__all__ = ["test_a_national_day_over_every_english_authority_reaches_each_council_exactly",
           "test_each_subscriber_receives_exactly_its_view",
           "test_revocation_stops_delivery_of_records_published_after_it"]


@pytest.fixture(scope="module")
def gate(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[GateThread]:
    runner = start_gate(services, "test-gate-kafka-python", "test-kafka-python-worker-1", transport="kafka-python")
    # The gate's readiness is its stage's: the bound method names the transport in use.
    assert runner.gate is not None and isinstance(getattr(runner.gate.ready, "__self__", None),
                                                  TransactionalStage)
    yield runner
    runner.stop()
    assert runner.failure is None, runner.failure
