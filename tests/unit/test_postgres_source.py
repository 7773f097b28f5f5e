"""The PostgreSQL source's pure parts: the keyset query it sends, the table or query it reads from, positions that
keep each value's type, and what a row becomes (a record, or a reject naming its watermark and id)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from broker.errors import ConfigError, ServiceError
from connectors.config import SinkConfigError, load_source
from connectors.sources.base import Position, SourceBatch, is_idle
from connectors.sources.coercion import mapper
from connectors.sources.polling import Polled
from connectors.sources.postgres import Keyset, PostgresSource, relation, tagged, untagged

SCHEMA = {"type": "record", "name": "Sitrep", "fields": [
    {"name": "trust_ods_code", "type": "string"}, {"name": "date", "type": {"type": "int", "logicalType": "date"}},
    {"name": "covid_inpatients", "type": "int"}]}
T0 = dt.datetime(2020, 6, 1, tzinfo=dt.UTC)


def test_the_keyset_query_reads_after_the_position_in_watermark_then_id_order() -> None:
    keyset = Keyset("updated_at", ("id",))
    assert keyset.select('"sitrep"', False, 0, 500) == (
        'SELECT * FROM "sitrep" WHERE "updated_at" IS NOT NULL ORDER BY "updated_at", "id" LIMIT 500')
    assert keyset.select('"sitrep"', True, 5, 500) == (
        'SELECT * FROM "sitrep" WHERE "updated_at" IS NOT NULL AND ("updated_at", "id") > (%s, %s) AND '
        '"updated_at" <= now() - make_interval(secs => 5.0) ORDER BY "updated_at", "id" LIMIT 500')
    assert Keyset("id").select('"t"', True, 0, 10) == 'SELECT * FROM "t" WHERE "id" IS NOT NULL AND "id" > %s ' \
                                                      'ORDER BY "id" LIMIT 10'


def test_a_table_name_is_quoted_and_a_query_is_one_select() -> None:
    assert relation("public.sitrep", None) == '"public"."sitrep"'
    query = "SELECT * FROM a JOIN b USING (id)"
    assert relation(None, f"{query};") == f"({query}) AS accord_source"
    with pytest.raises(ConfigError, match="not a table name"):
        relation("sitrep; DROP TABLE x", None)
    with pytest.raises(ConfigError, match="one SELECT"):
        relation(None, "DELETE FROM sitrep")


@pytest.mark.parametrize("value", [T0, dt.datetime(2020, 6, 1, 12, 0, 0, 123456), dt.date(2020, 6, 1), 7, 2**62,
                                   decimal.Decimal("1.50"), "RWE", uuid.UUID(int=5), 1.25])
def test_a_position_value_comes_back_as_the_type_it_was_read_as(value: Any) -> None:
    back = untagged(tagged(value))
    assert back == value and type(back) is type(value)


class Rows:
    """A database answering the rows after the position it is sent, as PostgreSQL would for the keyset query."""

    def __init__(self, rows: list[tuple[Any, ...]], fail_once: bool = False) -> None:
        self.data, self.fail_once, self.asked = rows, fail_once, []  # type: list[tuple[Any, ...]], bool, list[Any]

    def rows(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        self.asked.append(list(params))
        if self.fail_once:
            self.fail_once = False
            raise ServiceError("PostgreSQL query failed: the server closed the connection")
        limit = int(sql.rsplit("LIMIT ", 1)[1])
        after = tuple(params)
        chosen = sorted(r for r in self.data if not after or (r[0], r[1]) > after)[:limit]
        return ["updated_at", "id", "trust", "day", "inpatients"], chosen


def rows(n: int) -> list[tuple[Any, ...]]:
    return [(T0 + dt.timedelta(seconds=i // 3), i, f"R{i}", dt.date(2020, 6, 1), i) for i in range(n)]


def source(db: Rows, max_rows: int = 4) -> PostgresSource:
    fields = mapper(SCHEMA, {"trust_ods_code": "trust", "date": "day", "covid_inpatients": "inpatients"})
    return PostgresSource(db, '"sitrep"', Keyset("updated_at", ("id",)), fields, max_rows, label="sitrep")


def test_batches_end_on_a_row_and_read_on_after_it_across_ties() -> None:
    db = Rows(rows(10))
    batches = list(source(db).batches(None))
    assert [len(b.records) for b in batches] == [4, 4, 2]
    assert [r["covid_inpatients"] for b in batches for r in b.records] == list(range(10))
    assert batches[0].end == {"key": [{"timestamptz": (T0 + dt.timedelta(seconds=1)).isoformat()}, {"int": 3}]}
    assert db.asked[1] == [T0 + dt.timedelta(seconds=1), 3]  # the tie at second 1 (ids 3-5) is split, not lost
    assert batches[0].records[0] == {"trust_ods_code": "R0", "date": "2020-06-01", "covid_inpatients": 0}


def test_a_row_that_cannot_be_a_record_is_a_reject_naming_its_watermark_and_id() -> None:
    db = Rows([(T0, 1, "R1", dt.date(2020, 6, 1), decimal.Decimal("2.5"))])
    (batch,) = list(source(db).batches(None))
    assert batch.records == [] and batch.rows == 1
    assert batch.rejects[0].where == "sitrep updated_at=2020-06-01T00:00:00+00:00, id=1"
    assert "covid_inpatients" in batch.rejects[0].reason and batch.rejects[0].raw["inpatients"] == 2.5


def test_a_failing_database_is_read_again_from_the_last_batch_handed_out() -> None:
    db = Rows(rows(6), fail_once=True)
    waits: list[float] = []
    errors: list[Exception] = []
    got = list(Polled(source(db), follow=False, poll_s=10, wait=waits.append, on_error=errors.append)
               .batches(None))
    assert [r["covid_inpatients"] for b in got for r in b.records] == list(range(6))
    assert waits == [1.0] and "closed the connection" in str(errors[0])


def test_following_polls_again_after_poll_s_until_stopped() -> None:
    db = Rows(rows(2))
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        db.data += [(T0 + dt.timedelta(hours=1), 100 + len(waits), "N", dt.date(2020, 6, 1), 100)]

    polled = Polled(source(db), follow=True, poll_s=30, stop=lambda: len(waits) >= 3, wait=wait)
    handed: list[SourceBatch] = list(polled.batches(None))
    got = [b for b in handed if not is_idle(b)]
    assert len(handed) - len(got) == 3  # an idle batch before each wait: the runner stores what is in flight
    assert [b.rows for b in got] == [2, 1, 1] and waits == [30, 30, 30]  # the row of the third wait: next run
    ends: list[Position] = [b.end for b in got]
    assert ends[-1]["key"][1] == {"int": 102}


def test_a_config_missing_its_table_says_where(tmp_path: Path) -> None:
    config = tmp_path / "source.yaml"
    config.write_text("""source: postgres
name: sitrep
stream: nhse.hospital-sitrep
state_dir: state
api: {url: "http://127.0.0.1:1", token_file: t}
schema_file: s.avsc
postgres:
  dsn: postgresql://accord@127.0.0.1/accord
  watermark: updated_at
""")
    with pytest.raises(SinkConfigError) as error:
        load_source(config)
    assert f"{config}:8: postgres: Value error, give `table` or `query`, one of the two" in str(error.value)
