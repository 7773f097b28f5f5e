"""The real OPA server: policies from the signed bundle, data pushed with opa-python-client, decisions read back."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from broker.adapters.opa import OpaPolicyEngine
from broker.errors import PolicyEngineError
from broker.local.stack import Endpoints
from tests.conftest import opa_as

FIELDS: dict[str, Any] = {"lsoa": {"transform": "keep", "method": None, "as": None, "params": {}}}
CATALOG: dict[str, Any] = {
    "revision": "c-test00000001",
    "bodies": {},
    "streams": {"ukhsa.positive-tests": {"owner": "ukhsa", "jurisdiction": ["utla", "ltla"],
                                         "fields": {"lsoa": {"tags": []}, "name": {"tags": ["direct-identifier"]}}}},
    "agreements": {
        "t1-leicester": {
            "subscriber": "leicester-city-council", "stream": "ukhsa.positive-tests", "purpose": "health-protection",
            "tiers": [{"name": "dph", "roles": ["dph"], "other_fields": "keep", "fields": {}}],
            "row_scope": {"areas": ["E06000016"]}, "valid_from": "2020-03-20T00:00:00Z",
            "valid_until": "2022-06-30T00:00:00Z", "emergency_level_required": "normal",
        }
    },
}
REQUEST = {
    "subscriber": "leicester-city-council", "role": "dph", "stream": "ukhsa.positive-tests",
    "purpose": "health-protection", "time": "2020-06-24T09:00:00Z", "emergency_level": "normal",
}


@pytest.fixture
def engine(services: Endpoints) -> Iterator[OpaPolicyEngine]:
    engine = opa_as(services.opa_url)
    engine.put_data("accord/catalog", CATALOG)
    yield engine
    engine.close()


def test_agreement_grants_a_plan_to_the_named_subscriber(engine: OpaPolicyEngine) -> None:
    plan = engine.evaluate("accord.plans.plan", REQUEST)
    assert plan["allow"] is True and plan["agreements"] == ["t1-leicester"]
    # other_fields keep: lsoa is delivered, the unnamed direct identifier is not
    assert sorted(plan["fields"]) == ["lsoa"]
    assert plan["row_filter"] == {"jurisdiction": ["utla", "ltla"], "areas": ["E06000016"], "required": []}
    assert plan["expiry"] == "2022-06-30T00:00:00Z" and plan["revision"] == "c-test00000001/0"


def test_default_deny_for_another_council(engine: OpaPolicyEngine) -> None:
    plan = engine.evaluate("accord.plans.plan", REQUEST | {"subscriber": "nottingham-city-council"})
    assert plan["allow"] is False and plan["fields"] == {} and plan["row_filter"]["areas"] == []
    assert plan["reasons"] == ["no agreement names this subscriber, role, stream and purpose"]


def test_new_data_takes_effect_on_the_next_decision(engine: OpaPolicyEngine) -> None:
    engine.put_data("accord/catalog", CATALOG | {"agreements": {}})
    assert engine.evaluate("accord.plans.allow", REQUEST) is False


def test_broken_policy_is_refused_with_opa_message(engine: OpaPolicyEngine) -> None:
    with pytest.raises(PolicyEngineError, match="broken"):
        engine.put_policy("broken", "package broken\n\nallow if {")


def test_undefined_rule_is_none(engine: OpaPolicyEngine) -> None:
    assert engine.evaluate("accord.plans.no_such_rule", REQUEST) is None


def test_a_caller_without_accords_token_cannot_rewrite_the_catalog_or_ask(services: Endpoints) -> None:
    forged = CATALOG | {"revision": "c-forged"}
    catalog = f"{services.opa_url}/v1/data/accord/catalog"
    assert requests.put(catalog, json=forged, timeout=5).status_code == 401
    reader = opa_as(services.opa_url, "reader")
    try:
        with pytest.raises(PolicyEngineError, match="refused Accord's token"):
            reader.put_data("accord/catalog", forged)  # the API's guards read decisions; only the gate writes
    finally:
        reader.close()
    asked = requests.post(f"{services.opa_url}/v1/data/accord/plans/plan", json={"input": REQUEST}, timeout=5)
    assert asked.status_code == 401
    writer = opa_as(services.opa_url)
    try:
        assert writer.evaluate("accord.catalog.revision", {}) != "c-forged"
    finally:
        writer.close()


def test_calls_from_several_threads_at_once_each_get_their_own_answer(engine: OpaPolicyEngine) -> None:
    """A gate asks for its plans several at a time (services/planner.py): no answer may reach another question."""
    subscribers = ["leicester-city-council", "nottingham-city-council"] * 100

    def ask(subscriber: str) -> tuple[str, bool, list[str]]:
        plan = engine.evaluate_with_id("accord.plans.plan", REQUEST | {"subscriber": subscriber}).result
        return plan["subscriber"], plan["allow"], plan["agreements"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, subscribers))

    assert answers == [(s, s == "leicester-city-council", ["t1-leicester"] if s.startswith("leicester") else [])
                       for s in subscribers]
