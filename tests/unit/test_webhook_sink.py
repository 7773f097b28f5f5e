"""The webhook sink with fakes: signing (checked by the README's own snippet), batches and delivery ids, the retry
and backoff schedule, the dead letter and its redelivery, positions stored after each batch, and the config."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastavro import parse_schema, schemaless_writer

from broker.adapters.registry_memory import InMemorySchemaRegistry
from broker.adapters.webhook_http import HttpEndpoint
from broker.domain.messages import Record
from broker.domain.webhooks import verify
from broker.domain.wire import frame
from broker.errors import ConfigError, GovernanceError, NotFoundError, ServiceError
from connectors.config import SinkConfigError, WebhookSinkConfig, load
from connectors.sinks.base import Decoded
from connectors.sinks.webhook import (
    Courier,
    Interrupted,
    RetryPolicy,
    WebhookSink,
    batches,
    check_secret,
    encode,
    redeliver,
)
from connectors.sinks.webhook_state import StateDirectory, write_atomically
from tests.unit.sink_fakes import FakeEndpoint, FakeSource, readme_check

TOPIC = "deliver.leicester-city-council.dph.ukhsa.positive-tests"
SECRET = "0123456789abcdef0123456789abcdef"
SCHEMA = {"type": "record", "name": "PositiveTest", "fields": [
    {"name": "specimen_id", "type": "string"},
    {"name": "specimen_date", "type": {"type": "int", "logicalType": "date"}}]}
DAY = dt.date(2026, 11, 30)
THREE_TRIES = RetryPolicy(3, 0.5, 2.0)


def records(registry: InMemorySchemaRegistry, count: int) -> list[Record]:
    schema_id = registry.register(f"{TOPIC}-value", json.dumps(SCHEMA))
    out = []
    for offset in range(count):
        body = io.BytesIO()
        schemaless_writer(body, parse_schema(SCHEMA), {"specimen_id": f"S-{offset}", "specimen_date": DAY})
        out.append(Record(TOPIC, 0, offset, None, frame(schema_id, body.getvalue()),
                          (("accord.source", f"ingest.ukhsa.positive-tests/0/{100 + offset}".encode()),)))
    return out


class Harness:
    """A sink over `count` records with a fake endpoint, a fake clock whose waits pass at once, and a state dir."""

    def __init__(self, tmp_path: Path, answers: list[int | ServiceError], count: int = 3, batch: int = 2,
                 policy: RetryPolicy = THREE_TRIES, stop: Callable[[], bool] = lambda: False) -> None:
        self.registry, self.endpoint, self.waits = InMemorySchemaRegistry(), FakeEndpoint(answers), list[float]()
        self.now = time.time()
        self.records = records(self.registry, count)
        self.state = StateDirectory(tmp_path / "state")
        self.courier = Courier(self.endpoint, SECRET, policy, clock=lambda: dt.datetime.fromtimestamp(self.now, dt.UTC),
                               wait=self.waits.append, stop=stop)
        self.batch = batch
        self.source = FakeSource(TOPIC, self.records)
        self.sink = WebhookSink(self.source, self.registry, self.courier, self.state, batch)

    def restarted(self) -> WebhookSink:
        self.source = FakeSource(TOPIC, self.records)
        self.sink = WebhookSink(self.source, self.registry, self.courier, self.state, self.batch)
        return self.sink

    def ids(self) -> list[str]:
        return [headers["Accord-Delivery-Id"] for _, headers in self.endpoint.posts]


def test_each_batch_is_signed_over_timestamp_and_body_and_names_its_offset_range(tmp_path: Path) -> None:
    run = Harness(tmp_path, [])
    assert run.sink.step() == 3
    assert run.ids() == [f"{TOPIC}/0/0-1", f"{TOPIC}/0/2-2"]
    check = readme_check()
    for body, headers in run.endpoint.posts:
        assert headers["Accord-Signature"].startswith(f"t={int(run.now)},v1=")
        assert check(SECRET, headers["Accord-Signature"], body)
        verify(SECRET, headers["Accord-Signature"], body, run.now)  # the governance webhooks' own check agrees
        assert not check(SECRET, headers["Accord-Signature"], body.replace(b"\"S-", b"\"X-"))
        assert not check("another secret of enough length", headers["Accord-Signature"], body)
    first = json.loads(run.endpoint.posts[0][0])
    assert first["delivery_id"] == run.ids()[0] and (first["first_offset"], first["last_offset"]) == (0, 1)
    assert first["records"][1] == {"offset": 1, "source": "ingest.ukhsa.positive-tests/0/101",
                                   "schema_id": first["records"][1]["schema_id"],
                                   "value": {"specimen_id": "S-1", "specimen_date": "2026-11-30"}}
    assert run.state.positions(TOPIC) == {0: 3}


def test_a_stale_signature_fails_the_readme_check(tmp_path: Path) -> None:
    run = Harness(tmp_path, [], count=1)
    run.now -= 301  # a request replayed five minutes later
    run.sink.step()
    ((body, headers),) = run.endpoint.posts
    assert not readme_check()(SECRET, headers["Accord-Signature"], body)
    with pytest.raises(GovernanceError, match="replay"):
        verify(SECRET, headers["Accord-Signature"], body, time.time())


def test_server_errors_throttling_and_no_answer_are_retried_with_doubling_capped_waits(tmp_path: Path) -> None:
    answers: list[int | ServiceError] = [500, 503, ServiceError("no answer (ConnectError)"), 429, 408]
    run = Harness(tmp_path, answers, count=1, policy=RetryPolicy(6, 0.5, 2.0))
    assert run.sink.step() == 1
    assert run.waits == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert [h["Accord-Attempt"] for _, h in run.endpoint.posts] == ["1", "2", "3", "4", "5", "6"]
    assert len({body for body, _ in run.endpoint.posts}) == 1  # the same bytes each time
    assert run.ids() == [f"{TOPIC}/0/0-0"] * 6
    assert run.state.dead_letters() == [] and run.state.positions(TOPIC) == {0: 1}


def test_the_backoff_schedule_of_a_policy() -> None:
    policy = RetryPolicy(max_attempts=10, first_backoff_s=0.25, max_backoff_s=3.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert RetryPolicy(2000, 1.0, 60.0).delay(2000) == 60.0  # no overflow
    assert [s for s in (None, 301, 400, 401, 404, 408, 409, 413, 422, 429, 500, 502, 503) if policy.retried(s)] == [
        None, 408, 429, 500, 502, 503]


def test_a_refusal_is_not_retried_and_its_batch_goes_to_the_dead_letter_while_the_rest_move_on(
        tmp_path: Path) -> None:
    run = Harness(tmp_path, [400])
    assert run.sink.step() == 3
    assert run.ids() == [f"{TOPIC}/0/0-1", f"{TOPIC}/0/2-2"] and run.waits == []
    (letter,) = run.state.dead_letters()
    assert (letter.id, letter.partition, letter.first_offset, letter.last_offset) == (f"{TOPIC}/0/0-1", 0, 0, 1)
    assert letter.reason == "HTTP 400: receiver says 400" and len(letter.attempts) == 1
    assert [r["value"]["specimen_id"] for r in letter.batch["records"]] == ["S-0", "S-1"]
    assert run.state.positions(TOPIC) == {0: 3} and run.sink.rejected_count() == 2 and run.sink.rejected == 2


def test_a_batch_is_retried_to_the_end_before_the_next_is_sent_then_dead_lettered(tmp_path: Path) -> None:
    run = Harness(tmp_path, [500, 502, 503])
    assert run.sink.step() == 3
    assert run.ids() == [f"{TOPIC}/0/0-1"] * 3 + [f"{TOPIC}/0/2-2"]
    assert run.waits == [0.5, 1.0]
    (letter,) = run.state.dead_letters()
    assert [a.status for a in letter.attempts] == [500, 502, 503] and letter.reason.startswith("HTTP 503")
    stored = json.loads((run.state.root / "dead-letter" / f"{TOPIC}+0+0-1.json").read_text())
    assert stored["reason"] == letter.reason and len(stored["batch"]["records"]) == 2


def test_the_position_is_stored_after_each_batch_so_a_stop_mid_retry_resends_only_that_batch(
        tmp_path: Path) -> None:
    stopping: list[bool] = []
    run = Harness(tmp_path, [200, 500], count=5, policy=RetryPolicy(5, 0.5, 2.0), stop=lambda: bool(stopping))
    run.courier.wait = lambda seconds: stopping.append(True)  # SIGTERM arrives during the first backoff
    with pytest.raises(Interrupted, match="sent again at the next start"):
        run.sink.step()
    assert run.state.positions(TOPIC) == {0: 2}  # the accepted batch, not the one being retried
    stopping.clear()
    restarted = run.restarted()
    assert restarted.step() == 3
    assert run.source.seeks == [{0: 2}]
    assert run.ids() == [f"{TOPIC}/0/0-1", f"{TOPIC}/0/2-3", f"{TOPIC}/0/2-3", f"{TOPIC}/0/4-4"]
    assert run.state.positions(TOPIC) == {0: 5} and run.state.dead_letters() == []


def test_a_failing_endpoint_is_waited_for_by_step_or_wait_and_read_again_from_the_stored_position(
        tmp_path: Path) -> None:
    run = Harness(tmp_path, [], count=2)
    run.sink.step_or_wait(max_records=0)
    positions = run.state.root / "positions" / f"{TOPIC}.json"
    assert json.loads(positions.read_text())["positions"] == {"0": 0}
    positions.unlink()
    positions.mkdir()  # the position cannot be written: as with a full disk
    waits: list[float] = []
    run.sink._wait = waits.append
    assert run.sink.step_or_wait() == 0
    assert waits == [0.5] and "cannot write" in run.sink.last_error
    positions.rmdir()
    assert run.sink.step_or_wait() == 2
    assert run.ids() == [f"{TOPIC}/0/0-1"] * 2  # at least once: the batch whose position was lost is sent again


def test_redeliver_sends_the_same_bytes_newly_signed_and_removes_what_is_accepted(tmp_path: Path) -> None:
    run = Harness(tmp_path, [500, 500, 500, 401])
    run.sink.step()
    first, second = run.state.dead_letters()
    original = run.endpoint.posts[0][0]
    assert [d.id for d in (first, second)] == [f"{TOPIC}/0/0-1", f"{TOPIC}/0/2-2"]
    with pytest.raises(NotFoundError, match="no dead letter 'nope'"):
        redeliver(run.state, run.courier, ["nope"])
    run.endpoint.answers = [503]
    run.now += 600
    (refused,) = redeliver(run.state, run.courier, [first.id])
    assert not refused.accepted and refused.error.startswith("HTTP 503")
    kept = run.state.dead_letter(first.id)
    assert len(kept.attempts) == 4 and kept.reason.startswith("HTTP 503") and run.waits == [0.5, 1.0]
    done = redeliver(run.state, run.courier)
    assert [(d.letter.id, d.accepted) for d in done] == [(first.id, True), (second.id, True)]
    assert run.state.dead_letters() == []
    body, headers = run.endpoint.posts[-2]
    assert body == original and headers["Accord-Delivery-Id"] == first.id and headers["Accord-Attempt"] == "5"
    assert headers["Accord-Signature"].startswith(f"t={int(run.now)},")  # signed at the redelivery
    verify(SECRET, headers["Accord-Signature"], body, run.now)


def test_batches_hold_one_partition_each_in_offset_order() -> None:
    def d(partition: int, offset: int) -> Decoded:
        return Decoded(partition, offset, 1, SCHEMA, {}, "")
    got = batches([d(0, 5), d(1, 7), d(0, 6), d(0, 9), d(1, 8)], 2)
    assert [[(r.partition, r.offset) for r in b] for b in got] == [[(0, 5), (0, 6)], [(0, 9)], [(1, 7), (1, 8)]]


def test_values_json_has_no_type_for_are_written_as_text() -> None:
    value = {"at": dt.datetime(2026, 11, 30, 9, 5, tzinfo=dt.UTC), "n": decimal.Decimal("1.50"), "b": b"\x00\xff"}
    assert json.loads(encode(value)) == {"at": "2026-11-30T09:05:00+00:00", "n": "1.50", "b": "AP8="}
    assert encode(json.loads(encode(value))) == encode(value)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        check_secret("short", "webhook.secret")


def test_a_write_that_fails_leaves_the_old_positions_and_no_temporary_file(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    state = StateDirectory(tmp_path)
    state.save_positions(TOPIC, {0: 10})

    def crash(*_: object) -> None:
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(ServiceError, match="disk full"):
        state.save_positions(TOPIC, {0: 20})
    monkeypatch.undo()
    assert state.positions(TOPIC) == {0: 10}
    assert [p.name for p in (tmp_path / "positions").iterdir()] == [f"{TOPIC}.json"]
    write_atomically(tmp_path / "x" / "y.json", b"{}")
    assert (tmp_path / "x" / "y.json").read_bytes() == b"{}"


def test_one_run_at_a_time_per_state_directory(tmp_path: Path) -> None:
    with StateDirectory(tmp_path).lock(), pytest.raises(ConfigError, match="another `accord connect run`"), \
            StateDirectory(tmp_path).lock():
        pass
    with StateDirectory(tmp_path).lock():
        pass  # released when the first run ended


def test_a_state_file_that_is_not_ours_is_named(tmp_path: Path) -> None:
    (tmp_path / "positions").mkdir()
    (tmp_path / "positions" / f"{TOPIC}.json").write_text("[1, 2")
    with pytest.raises(ConfigError, match=r"positions/deliver\..*\.json is not JSON"):
        StateDirectory(tmp_path).positions(TOPIC)


def test_the_http_endpoint_reports_the_answer_and_no_answer() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/moved":
            return httpx.Response(301, headers={"Location": "http://127.0.0.1/elsewhere"})
        if request.url.path == "/down":
            raise httpx.ConnectError("connection refused")
        return httpx.Response(503, text="  busy,\n try   later " + "x" * 1000)

    transport = httpx.MockTransport(answer)
    with HttpEndpoint("http://127.0.0.1/hook", transport=transport) as endpoint:
        status, text = endpoint.post(b'{"a":1}', {"Accord-Delivery-Id": "t/0/1-2"})
        assert status == 503 and text.startswith("busy, try later x") and len(text) < 320
        assert seen[0].content == b'{"a":1}' and seen[0].headers["Accord-Delivery-Id"] == "t/0/1-2"
    with HttpEndpoint("http://127.0.0.1/moved", transport=transport) as endpoint:
        assert endpoint.post(b"{}", {})[0] == 301 and len(seen) == 2  # not followed
    with HttpEndpoint("http://127.0.0.1/down", transport=transport) as endpoint, \
            pytest.raises(ServiceError, match=r"no answer from http://127\.0\.0\.1/down"):
        endpoint.post(b"{}", {})


GOOD = """sink: webhook
body: leicester-city-council
role: dph
kafka: {bootstrap: 127.0.0.1:9092, password_file: kafka.password}
registry: {url: http://127.0.0.1:8081, token_file: registry.token}
webhook:
  url: https://intake.example.gov.uk/accord
  secret_file: webhook.secret
  state_dir: state
  retry: {max_attempts: 4, max_backoff_s: 10}
deliveries:
  - {stream: ukhsa.positive-tests}
"""


def test_a_good_webhook_config_loads_with_defaults_and_paths_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "webhook.yaml"
    path.write_text(GOOD)
    config = load(path)
    assert isinstance(config, WebhookSinkConfig)
    assert config.topics() == [TOPIC] and config.kafka_user() == "leicester-city-council.dph"
    assert (config.webhook.secret_file, config.webhook.state_dir) == (tmp_path / "webhook.secret", tmp_path / "state")
    assert (config.webhook.batch, config.webhook.retry.max_attempts, config.webhook.retry.first_backoff_s) == (
        100, 4, 0.5)
    for loopback in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]:9/hook"):
        path.write_text(GOOD.replace("https://intake.example.gov.uk/accord", loopback))
        assert isinstance(load(path), WebhookSinkConfig)


@pytest.mark.parametrize(("text", "problem"), [
    (GOOD.replace("sink: webhook", "sink: webhok"), ":1: sink: Input should be 'postgres' or 'files' or 'webhook'"),
    (GOOD.replace("https://intake", "http://intake"), ":7: webhook.url: Value error, 'http://intake.example.gov.uk"
                                                      "/accord' would send the records unencrypted"),
    (GOOD.replace("https://intake", "ftp://intake"), ":7: webhook.url: Value error, 'ftp://intake"),
    (GOOD.replace("https://intake", "https://user:pw@intake"), ":7: webhook.url: Value error, the URL must not carry"),
    (GOOD.replace("max_backoff_s: 10", "max_backoff_s: 0.1"), ":10: webhook.retry: Value error, max_backoff_s (0.1) "
                                                              "is below first_backoff_s (0.5)"),
    (GOOD.replace("max_attempts: 4", "max_attempts: 0"), ":10: webhook.retry.max_attempts: Input should be greater"),
    (GOOD.replace("  state_dir: state\n", ""), ":7: webhook.state_dir: Field required"),
    (GOOD.replace("  state_dir: state\n", "  state_dir: state\n  batch: 0\n"), ":10: webhook.batch: Input should be"),
    (GOOD.replace("webhook:\n", "postgres: {dsn: postgresql://x}\nwebhook:\n"), ":6: postgres: Extra inputs"),
])
def test_a_bad_webhook_config_names_file_line_and_field(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "webhook.yaml"
    path.write_text(text)
    with pytest.raises(SinkConfigError) as caught:
        load(path)
    assert any(line.startswith(f"{path}{problem}") for line in caught.value.problems), caught.value.problems
