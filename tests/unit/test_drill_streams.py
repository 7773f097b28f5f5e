"""Drill streams in memory: T1's twin registered and named in the drill's catalog, synthetic records published and
delivered by a fake gate, the drill body's view held to its plan, and a revocation held to what is published after
it; a gate that leaks another area's rows, hands over a field the plan drops or ignores a revocation fails the
matching check."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest

from broker.demo.synthetic import for_area
from broker.domain.drills import drill_stream, drill_template
from broker.domain.ladder import Actor
from broker.domain.transforms import age_band
from broker.errors import DrillError
from broker.services.drill_flows import drills_for, tear_down
from broker.services.drill_runner import DrillRunner
from broker.services.drill_streams import Opaque, expected_view, view_problems
from tests.unit.drill_fakes import DRILL_BODY, FakeData, Row, analyst_view
from tests.unit.governance_catalog import catalog
from tests.unit.test_drill_flows import Deployment

ANALYST = catalog()["templates"]["t1-positive-tests"]["tiers"][1]
LEICESTER, MANCHESTER = "E06000016", "E08000003"


def leicester_only(record: Row) -> Row | None:
    return analyst_view(record) if record["ltla"] == LEICESTER else None


def drilled(data: FakeData) -> tuple[Deployment, dict[str, Any], list[Any]]:
    deployment = Deployment(catalog())
    drills, checks = drills_for(["T1"], "abc123", deployment, deployment, data)
    report = DrillRunner("unit", deployment.clock).run(["T1"], checks)
    return deployment, {c.check: c for c in report.checks}, drills


def test_t1_on_its_drill_stream_delivers_within_target_as_the_plan_says_and_a_revocation_holds() -> None:
    data = FakeData(leicester_only)
    deployment, checks, drills = drilled(data)
    real = {"switch-on", "approval-to-first-record", "subscriber-view", "dispute-decision", "grant-withdrawn",
            "revocation", "misroute"}
    assert {name: checks[name].verdict for name in real} == dict.fromkeys(real, "pass"), [
        checks[name].reason for name in real]
    twin = drill_stream("ukhsa.positive-tests", "abc123")
    assert twin == "ukhsa.drill-abc123-positive-tests"
    assert data.registered == [(f"ingest.{twin}-value", {"type": "record", "name": "PositiveTest", "fields": [],
                                                         "accord.stream": twin})]
    [request] = deployment.governance.requests()
    assert (request.stream, request.body) == (twin, "drill-abc123-t1")   # the twin, never the real stream
    applied = deployment.current() or {}
    assert applied["streams"][twin]["schema_id"] == 41
    assert applied["templates"][drill_template("t1-positive-tests", "abc123")]["stream"] == twin
    assert {p.body for p in data.publishers} == {"ukhsa"}     # published as the stream's publisher
    assert "withheld" in checks["subscriber-view"].reason and MANCHESTER in checks["subscriber-view"].reason
    assert checks["revocation"].seconds is not None
    assert checks["subscriber-view"].reason.endswith("read as its own login drill-abc123-t1.analyst")
    assert tear_down(drills) == [] and deployment.current() == catalog()
    assert data.logins == set()     # the drill body's login went with it
    [misroute] = deployment.governance.misroutes(None)
    assert (misroute.recipient, misroute.belongs_to, misroute.state) == (DRILL_BODY, MANCHESTER, "deleted")
    assert misroute.rightful == ()          # nobody receives the drill stream: no real council is told


def test_a_gate_that_ignores_revocations_fails_the_revocation_check() -> None:
    _, checks, _ = drilled(FakeData(leicester_only, ignores_revocations=True))
    assert checks["grant-withdrawn"].verdict == "pass"
    revocation = checks["revocation"]
    assert revocation.verdict == "fail"
    assert "3 of 3 records published after the revocation was enforced were delivered" in revocation.reason


def test_a_gate_that_delivers_another_areas_rows_fails_the_view() -> None:
    _, checks, _ = drilled(FakeData(analyst_view))
    view = checks["subscriber-view"]
    assert view.verdict == "fail" and f"rows of {MANCHESTER} were delivered" in view.reason


def test_a_gate_that_hands_over_a_field_the_plan_drops_fails_the_view() -> None:
    _, checks, _ = drilled(FakeData(lambda r: {**analyst_view(r), "dob": r["dob"]} if r["ltla"] == LEICESTER
                                    else None))
    view = checks["subscriber-view"]
    assert view.verdict == "fail" and "fields the plan does not give: dob" in view.reason


def test_a_gate_that_delivers_nothing_fails_the_first_record_and_nothing_after_it_passes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("broker.services.drill_records.FIRST_RECORD_WAIT_S", 0.0)
    _, checks, _ = drilled(FakeData(lambda _: None))
    first = checks["approval-to-first-record"]
    assert first.verdict == "fail" and first.reason.startswith("nothing published on ukhsa.drill-abc123-positive-")
    assert first.reason.endswith("the gate group is 0 records behind on its ingest topic")
    assert checks["subscriber-view"].verdict == "not-run"
    # A revocation of a grant that never delivered shows nothing: not a pass.
    assert checks["grant-withdrawn"].verdict == "pass" and checks["revocation"].verdict == "not-run"


def test_the_plan_view_keeps_renames_and_generalises_and_drops_the_rest() -> None:
    born, tested = dt.date(1990, 5, 1), dt.date(2026, 3, 1)
    row: Row = {"specimen_id": "S1", "lsoa": "E01000001", "dob": born, "sex": "MALE", "specimen_date": tested,
                "name": "A Person"}
    view = expected_view(ANALYST, sorted(row), row)
    assert view == {"lsoa": "E01000001", "age_band": age_band(born, tested), "sex": "MALE"}
    assert view["age_band"] == "35-39"
    assert view_problems(view, dict(view)) == []
    assert view_problems(view, {**view, "sex": "FEMALE"}) == ["sex is 'FEMALE', the plan makes it 'MALE'"]
    pseudonymised = {"nhs_number": {"transform": "pseudonymise", "as": "nhs_number", "params": {}}}
    opaque = expected_view({"fields": pseudonymised, "other_fields": "drop"}, ["nhs_number"], {"nhs_number": "9"})
    assert opaque == {"nhs_number": Opaque("9")}
    assert view_problems(opaque, {"nhs_number": "9"}) == ["nhs_number is not transformed"]
    assert view_problems(opaque, {"nhs_number": "p-1f2e"}) == []


def test_a_drill_stream_is_its_publishers_own() -> None:
    assert drill_stream("nis.vaccination-uptake", "r1") == "nis.drill-r1-vaccination-uptake"
    with pytest.raises(DrillError, match=r"not `<publisher>\.<name>`"):
        drill_stream("no-dot", "r1")


class Quarantining(FakeData):
    """An ingest API that quarantines every record (say, a schema the drill's rows no longer fit)."""

    def publish(self, stream: str, publisher: Actor, records: Sequence[Row]) -> list[dict[str, Any]]:
        return [{"index": n, "status": "quarantined", "reasons": [{"field": "lsoa", "rule": "gss-known"}]}
                for n in range(len(records))]


def test_rows_the_ingest_api_quarantines_fail_the_first_record_saying_why() -> None:
    _, checks, _ = drilled(Quarantining(leicester_only))
    first = checks["approval-to-first-record"]
    assert first.verdict == "fail" and "quarantined the drill's synthetic records" in first.reason
    assert "gss-known" in first.reason


def test_synthetic_rows_are_made_for_any_authority_of_each_template_stream_but_t5s() -> None:
    day = dt.date(2026, 3, 1)
    for stream in ("ukhsa.positive-tests", "nhstt.cases-to-trace", "nhsd.shielded-patients",
                   "dhsc.care-home-capacity", "nis.vaccination-uptake", "ukhsa.isolation-notifications"):
        rows = for_area(stream, "E06000001", "E06000001", day, 2, "DRILL-x-1", 1)
        assert rows is not None and len(rows) == 2, stream
        assert all(row.get("ltla", row.get("utla")) == "E06000001" for row in rows), stream
    lsoas = {row["lsoa"] for row in for_area("ukhsa.positive-tests", "E06000001", "E06000001", day, 5, "D", 1) or []}
    assert lsoas and all(lsoa.startswith("E01") for lsoa in lsoas)     # Hartlepool's own, so residence routes home
    assert for_area("nhse.hospital-sitrep", "E06000001", "E06000001", day, 2, "D", 1) is None


class Duplicating(FakeData):
    """A gate that delivers every row twice (a transaction's output written again)."""

    def delivered(self, topic: str, reader: tuple[str, str] | None = None) -> list[tuple[Row, dict[str, bytes]]]:
        once = super().delivered(topic, reader)
        return once + once


def test_a_gate_that_delivers_a_row_twice_fails_the_view() -> None:
    _, checks, _ = drilled(Duplicating(leicester_only))
    view = checks["subscriber-view"]
    assert view.verdict == "fail" and "3 deliveries repeat a row already delivered" in view.reason, view.reason
