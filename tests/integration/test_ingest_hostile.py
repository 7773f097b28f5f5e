"""Hostile publish requests on the real Kafka, registry and OPA: no body gets a 5xx, and each refusal says what was
wrong. Request-level faults (nesting, media type, size) are refused whole with a 4xx; a record the checks refuse
(a number for a date, a bad NHS number, an unknown code, an oversize string) is quarantined with its rule and message,
as every refused row is (the publisher reads why in the answer and in `GET /streams/{stream}/quarantine`).

The property test sends its bodies to the API app in-process (httpx's ASGI transport, many at once) with the
session's real Kafka, registry, OPA and token key behind it: 10,000 bodies over loopback HTTP would take several
minutes on a shared 2-core machine; the app, guard and use case they reach are the same.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any, Protocol

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.api.app import create_api_app
from broker.api.auth import Guard
from broker.config import Settings
from broker.demo.synthetic import nhs_number
from broker.local.stack import Endpoints
from broker.runtime.api import open_ingest
from broker.security.api_tokens import verifier_for
from broker.services.ingest import read_quarantine
from tests.conftest import bearer, opa_as

STREAM = "ukhsa.positive-tests"


def _ukhsa() -> dict[str, str]:
    return bearer("ukhsa", "ig-lead")  # signed when asked: the session makes its token key at start


BODIES_PER_EXAMPLE = 20
EXAMPLES = 500            # 500 x 20 = 10,000 generated bodies


def _case(**overrides: Any) -> dict[str, Any]:
    case = {
        "specimen_id": f"HOSTILE-{uuid.uuid4().hex[:10]}", "nhs_number": nhs_number(7), "name": "Alex Example",
        "dob": "1984-03-07", "sex": "FEMALE", "ethnicity": "H", "address": "1 Example Road, Leicester",
        "postcode": "LE1 1AA", "occupation": None, "specimen_date": "2020-06-22", "lab_report_date": "2020-06-23",
        "test_type": "PCR", "pillar": "PILLAR_2", "lsoa": "E01013627", "msoa": "E02002807", "ltla": "E06000016",
        "utla": "E06000016",
    }
    return case | overrides


@pytest.fixture
def publish(services: Endpoints, applied_catalog: dict[str, Any]) -> Publish:
    """POST to the session's API process (over HTTP) as UKHSA's IG lead: a JSON body or raw bytes, extra headers."""
    def post(body: Any = None, content: bytes | None = None, **headers: str) -> httpx.Response:
        return httpx.post(f"{services.api_url}/streams/{STREAM}/records", json=body, content=content, timeout=60,
                          headers={**_ukhsa(), **headers})
    return post


class Publish(Protocol):
    def __call__(self, body: Any = None, content: bytes | None = None, **headers: str) -> httpx.Response: ...


def test_deep_nesting_is_refused_before_parsing(publish: Publish) -> None:
    deep = publish(content=b"[" * 1_000 + b"]" * 1_000, **{"Content-Type": "application/json"})
    assert deep.status_code == 400, deep.text
    assert deep.json()["error"] == "the body nests arrays and objects 1000 levels deep; at most 32 are allowed"
    inside = publish(content=b'{"records": [{"name": ' + b"[" * 5_000 + b"]" * 5_000 + b"}]}")
    assert inside.status_code == 400 and "5003 levels deep" in inside.json()["error"]


def test_a_body_that_is_not_json_by_its_media_type_is_refused(publish: Publish) -> None:
    plain = publish(content=json.dumps({"records": [_case()]}).encode(), **{"Content-Type": "text/plain"})
    assert plain.status_code == 415
    assert plain.json()["error"] == "the body must be JSON (Content-Type: application/json), not 'text/plain'"
    form = publish(content=b"records=1", **{"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    typed = publish(content=json.dumps({"records": []}).encode(),
                     **{"Content-Type": "application/json; charset=utf-8"})
    assert typed.status_code == 200, typed.text


def test_too_many_records_in_one_request(publish: Publish) -> None:
    many = publish({"records": [1] * 10_001})
    assert many.status_code == 413 and "at most 10000" in many.json()["error"]


@pytest.mark.parametrize(("field", "value", "rule", "message"), [
    ("dob", 0, "schema-type", "dob: a date is written as an ISO 8601 string such as 2020-06-22, not as a number"),
    ("specimen_date", 18_435, "schema-type", "specimen_date: a date is written as an ISO 8601 string"),
    ("nhs_number", "9434765918", "nhs-number", "nhs_number is an NHS number whose check digit (modulus 11) is wrong"),
    ("nhs_number", "<script>", "nhs-number", "nhs_number is not a 10-digit NHS number"),
    ("nhs_number", "", "nhs-number", "nhs_number is not a 10-digit NHS number"),
    ("nhs_number", "\x00", "nhs-number", "nhs_number is not a 10-digit NHS number"),
    ("nhs_number", "9" * 100_000, "max-length", "nhs_number is 100000 characters long; at most 1000 are allowed"),
    ("ethnicity", "White British", "code-list", "ethnicity is not in its code list (A, B, C, D, E, F, G, H, J, K"),
    ("sex", "F", "code-list", "sex is not one of its codes (FEMALE, MALE, INDETERMINATE, UNKNOWN)"),
    ("name", "x" * 201, "max-length", "name is 201 characters long; at most 200 are allowed"),
    ("occupation", "y" * 100_000, "max-length", "occupation is 100000 characters long; at most 200 are allowed"),
])
def test_a_record_the_checks_refuse_is_quarantined_saying_why(field: str, value: Any, rule: str,
                                                              message: str, services: Endpoints,
                                                              publish: Publish) -> None:
    case = _case(**{field: value})
    response = publish({"records": [case]})
    assert response.status_code == 200, response.text
    [outcome] = response.json()["outcomes"]
    assert outcome["status"] == "quarantined"
    [reason] = outcome["reasons"]
    assert (reason["field"], reason["rule"]) == (field, rule) and reason["message"].startswith(message)
    assert len(reason["value_excerpt"]) <= 40
    quarantine = httpx.get(f"{services.api_url}/streams/{STREAM}/quarantine", params={"limit": 100_000},
                           headers=_ukhsa(), timeout=60).json()["entries"]
    [entry] = [e for e in quarantine if isinstance(e.get("record"), dict)
               and e["record"].get("specimen_id") == case["specimen_id"]]
    assert entry["reasons"][0]["rule"] == rule and entry["partition"] == outcome["partition"]


# Values a publisher's bug or an attacker could put in a field: wrong types, numbers for dates, codes from another
# list, NHS numbers with a bad check digit, huge and control-character text, nested structures.
HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20), st.text(st.characters(codec="utf-8"), max_size=5),
    st.sampled_from(["9434765918", "943 476 5919", "", "\x00", "<script>alert(1)</script>", "x" * 1_001, "A", "Z", "I",
                     "99", "FEMALE", "female", "PCR", "2020-06-22", "2020-02-30", "2020-06-22T09:00:00Z", "E06000016",
                     "E99999999", "LE1 1AA", "\ud800", "\u202e", "y" * 70_000]),
    st.integers(-(2**70), 2**70), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
FIELDS = sorted(_case())


@st.composite
def _record(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(HOSTILE_VALUES)          # not an object at all
    changed = draw(st.dictionaries(st.sampled_from([*FIELDS, "unknown", "__proto__"]), HOSTILE_VALUES, max_size=3))
    dropped = draw(st.sets(st.sampled_from(FIELDS), max_size=2))
    return {k: v for k, v in _case(**changed).items() if k not in dropped}


@st.composite
def _request(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A body and its headers: mostly publish-shaped, sometimes any JSON, bytes, deep nesting or another media type."""
    kind = draw(st.sampled_from(["records"] * 6 + ["json", "bytes", "deep", "media"]))
    headers = {"Content-Type": "application/json"}
    if kind == "records":
        body: Any = {"records": draw(st.lists(_record(), max_size=3))}
        if draw(st.booleans()):
            body[draw(st.text(max_size=4))] = draw(HOSTILE_VALUES)
        raw = json.dumps(body).encode()
    elif kind == "json":
        raw = json.dumps(draw(st.recursive(HOSTILE_VALUES, lambda inner: st.lists(inner, max_size=3)
                                           | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                                           max_leaves=8))).encode()
    elif kind == "bytes":
        raw = draw(st.binary(max_size=300) | st.sampled_from([
            b'{"records": [{"name": 1e999}]}', b'{"records": [{"dob": -1e999}]}', b'{"records": [{"name": "\\ud800"}]}',
            b'{"records": [{"\\udfff": 1}]}', b'\xef\xbb\xbf{"records": []}', b'{"records": [], "records": 1}']))
    elif kind == "deep":
        depth, opener = draw(st.integers(1, 3_000)), draw(st.sampled_from([b"[", b'{"a":']))
        raw = b'{"records": ' + opener * depth + (b"]" if opener == b"[" else b"}") * depth + b"}"
    else:
        raw = json.dumps({"records": [draw(_record())]}).encode()
        headers["Content-Type"] = draw(st.sampled_from(["text/plain", "application/xml", "", "multipart/form-data",
                                                         "application/json; charset=latin-1", "application/ld+json",
                                                         "text/json", "*/*"]))
    if draw(st.integers(0, 9)) == 0:
        headers["Idempotency-Key"] = draw(st.sampled_from(["", " ", "k" * 256, "fuzz"]) | st.text(
            st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=40))
    return raw, headers


@pytest.fixture(scope="module")
def app(services: Endpoints, applied_catalog: dict[str, Any]) -> Iterator[FastAPI]:
    settings_ = Settings()
    with open_ingest(services.kafka, services.registry_url, settings_) as (ingest, log):
        yield create_api_app(ingest, lambda stream, limit: read_quarantine(log, stream, limit),
                             guard=Guard(verifier_for(settings_.secrets_dir).verify,
                                         opa_as(services.opa_url, "reader")))


async def _send_all(app: FastAPI, requests: list[tuple[bytes, dict[str, str]]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://accord.test",
                                 timeout=120) as client:
        return list(await asyncio.gather(*(
            client.post(f"/streams/{STREAM}/records", content=raw, headers={**_ukhsa(), **headers})
            for raw, headers in requests)))


def _check(raw: bytes, headers: dict[str, str], response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.status_code} for {headers} {raw[:300]!r}: {response.text[:300]}"
    answer = response.json()
    if response.status_code == 200:
        records = json.loads(raw)["records"]
        assert answer["accepted"] + answer["quarantined"] == len(records) == len(answer["outcomes"])
        for outcome in answer["outcomes"]:
            assert outcome["status"] == "accepted" or outcome["reasons"], outcome
    else:
        assert isinstance(answer.get("error") or answer.get("detail"), str | list) and response.status_code in (
            400, 409, 413, 415, 422), answer


def test_no_generated_body_gets_a_5xx(app: FastAPI) -> None:
    statuses: Counter[int] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(requests=st.lists(_request(), min_size=BODIES_PER_EXAMPLE, max_size=BODIES_PER_EXAMPLE))
    def no_5xx(requests: list[tuple[bytes, dict[str, str]]]) -> None:
        for (raw, headers), response in zip(requests, asyncio.run(_send_all(app, requests)), strict=True):
            statuses[response.status_code] += 1
            _check(raw, headers, response)

    no_5xx()
    # What the bodies left in the quarantine can still be read back as strict JSON (the endpoint and the console).
    with TestClient(app) as client:
        quarantine = client.get(f"/streams/{STREAM}/quarantine", params={"limit": 100_000}, headers=_ukhsa())
    assert quarantine.status_code == 200, quarantine.text[:300]
    assert quarantine.json()["entries"], "the refused records are in the quarantine"
    print(f"\nhostile publish bodies: {sum(statuses.values())} ({dict(sorted(statuses.items()))})")
    assert sum(statuses.values()) >= EXAMPLES * BODIES_PER_EXAMPLE == 10_000
    assert {200, 400, 415} <= set(statuses), "both the accepting and the refusing paths were reached"
