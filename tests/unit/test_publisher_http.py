"""The sources' HTTP publisher: the request it makes, how it reads the API's answer, and which answers are sent
again (ServiceError) and which refuse the batch (PublishRefused)."""

from __future__ import annotations

import json

import httpx
import pytest

from broker.adapters.publisher_http import HttpPublisher, PublishRefused
from broker.domain.publishing import PublishOutcome
from broker.errors import ServiceError

ANSWER = {"accepted": 1, "quarantined": 1, "outcomes": [
    {"index": 0, "status": "accepted", "topic": "t", "partition": 0, "offset": 1, "reasons": []},
    {"index": 1, "status": "quarantined", "topic": "q", "partition": 0, "offset": 2,
     "reasons": [{"field": "nhs_number", "rule": "nhs-number", "message": "nhs_number is not valid",
                  "value_excerpt": "94***"}]}]}


def test_a_batch_is_posted_with_its_key_and_token_and_each_outcome_read() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    with HttpPublisher("http://api", lambda: "tok", transport=httpx.MockTransport(answer)) as publisher:
        outcomes = publisher.publish("ukhsa.positive-tests", [{"a": 1}, {"a": 2}], "accord-source:s:abc")
    assert outcomes == [PublishOutcome("accepted"), PublishOutcome("quarantined", ("nhs_number is not valid",))]
    [request] = seen
    assert request.url.path == "/streams/ukhsa.positive-tests/records"
    assert request.headers["Idempotency-Key"] == "accord-source:s:abc"
    assert request.headers["Authorization"] == "Bearer tok"
    assert json.loads(request.content) == {"records": [{"a": 1}, {"a": 2}]}


@pytest.mark.parametrize(("status", "retried"), [(500, True), (503, True), (429, True), (401, True), (400, False),
                                                 (403, False), (404, False), (409, False), (413, False)])
def test_what_is_sent_again_and_what_refuses_the_batch(status: int, retried: bool) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json={"error": "why"}))
    with HttpPublisher("http://api", lambda: "tok", transport=transport) as publisher, \
            pytest.raises(ServiceError if retried else PublishRefused, match="why"):
        publisher.publish("s", [{}], "k")


def test_no_answer_or_a_garbled_one_is_sent_again() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with HttpPublisher("http://api", lambda: "tok", transport=httpx.MockTransport(down)) as publisher, \
            pytest.raises(ServiceError, match="did not answer"):
        publisher.publish("s", [{}], "k")
    garbled = httpx.MockTransport(lambda request: httpx.Response(200, json={"accepted": 1}))
    with HttpPublisher("http://api", lambda: "tok", transport=garbled) as publisher, \
            pytest.raises(ServiceError, match="not a publish answer"):
        publisher.publish("s", [{}], "k")
