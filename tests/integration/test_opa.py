"""The real OPA server: policies and data pushed with opa-python-client, decisions read back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker.adapters.opa import OpaPolicyEngine
from broker.errors import PolicyEngineError
from broker.local.stack import Endpoints
from broker.services.demo import load_policies

AGREEMENTS = {
    "t1-leicester-dph": {
        "subscriber": "leicester-city-council", "stream": "ukhsa.positive-tests",
        "purpose": "health-protection", "roles": ["dph"], "valid_from": "2020-03-20T00:00:00Z",
        "valid_until": "2022-06-30T00:00:00Z", "emergency_level_required": "normal",
    }
}
REQUEST = {
    "subscriber": "leicester-city-council", "role": "dph", "stream": "ukhsa.positive-tests",
    "purpose": "health-protection", "time": "2020-06-24T09:00:00Z", "emergency_level": "normal",
}


@pytest.fixture
def engine(services: Endpoints) -> Iterator[OpaPolicyEngine]:
    engine = OpaPolicyEngine(services.opa_url)
    load_policies(engine)
    engine.put_data("accord/agreements", AGREEMENTS)
    yield engine
    engine.close()


def test_agreement_grants_the_named_subscriber(engine: OpaPolicyEngine) -> None:
    decision = engine.evaluate("accord.sharing.decision", REQUEST)
    assert decision == {"allow": True, "agreements": ["t1-leicester-dph"], "reasons": []}


def test_default_deny_for_another_council(engine: OpaPolicyEngine) -> None:
    decision = engine.evaluate("accord.sharing.decision", REQUEST | {"subscriber": "nottingham-city-council"})
    assert decision["allow"] is False
    assert decision["reasons"] == ["no agreement names this subscriber, role, stream and purpose"]


def test_new_data_takes_effect_on_the_next_decision(engine: OpaPolicyEngine) -> None:
    engine.put_data("accord/agreements", {})
    assert engine.evaluate("accord.sharing.allow", REQUEST) is False


def test_broken_policy_is_refused_with_opa_message(engine: OpaPolicyEngine) -> None:
    with pytest.raises(PolicyEngineError, match="broken"):
        engine.put_policy("broken", "package broken\n\nallow if {")


def test_undefined_rule_is_none(engine: OpaPolicyEngine) -> None:
    assert engine.evaluate("accord.sharing.no_such_rule", REQUEST) is None
