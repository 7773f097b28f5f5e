"""The two-tier views of the subscriber-view check in memory: a county and a district drill body switched on from T1's
drill template through the governance API, a fake gate routing each row by its district and county to every drill
body with a live grant whose areas hold either; a gate that treats a county as a district, or a district as its
county, fails the check saying which rows went wrong; the two-tier grants are withdrawn and the bodies go."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from broker.domain.drills import is_drill_body
from broker.domain.geography import LaTable, LocalAuthority, Tier
from broker.domain.geography_files import load_la_table
from broker.domain.ladder import Actor
from broker.domain.topics import delivered_stream, delivery_topic
from broker.services.drill_flows import drills_for, tear_down
from broker.services.drill_runner import DrillRunner
from broker.services.drill_tiers import placed_in_district, two_tier_place
from tests.unit.drill_fakes import FakeData, Row, analyst_view
from tests.unit.governance_catalog import catalog
from tests.unit.test_drill_flows import Deployment

LA = load_la_table()
# Which of a row's codes a drill body's areas are matched against: the real gate's (its district and its county).
Codes = Callable[[Row], set[str]]


def both(row: Row) -> set[str]:
    return {row["ltla"], row["utla"]}


class TieredGate(FakeData):
    """Delivers each published row to every drill body with a live grant on the stream whose served areas hold one
    of the row's `codes`, as that body's analysts see it."""

    def __init__(self, deployment: Deployment, codes: Codes = both, areas: str = "served_areas") -> None:
        super().__init__(analyst_view)
        self.deployment, self.codes, self.areas = deployment, codes, areas
        self.topics: dict[str, list[tuple[Row, dict[str, bytes]]]] = {}

    def publish(self, stream: str, publisher: Actor, records: Sequence[Row]) -> list[dict[str, Any]]:
        self.publishers.append(publisher)
        bodies = (self.deployment.current() or {}).get("bodies") or {}
        grants = self.deployment.governance.state.grants.values()
        live = {(g["subscriber"], g["tiers"][0]["roles"][0]) for g in grants if g["stream"] == stream}
        outcomes = []
        for index, record in enumerate(records):
            self.offset += 1
            source = f"ingest.{stream}/0/{self.offset}".encode()
            for (body, role) in sorted(live):
                if is_drill_body(body) and self.codes(record) & set(bodies.get(body, {}).get(self.areas) or ()):
                    self.topics.setdefault(delivery_topic(body, role, stream), []).append(
                        (analyst_view(record), {"accord.source": source}))
            outcomes.append({"index": index, "status": "accepted", "topic": f"ingest.{stream}", "partition": 0,
                             "offset": self.offset})
        return outcomes

    def delivered(self, topic: str, reader: tuple[str, str] | None = None) -> list[tuple[Row, dict[str, bytes]]]:
        assert delivered_stream(topic) is not None
        return list(self.topics.get(topic, []))


def drilled(codes: Codes = both, areas: str = "served_areas") -> tuple[Deployment, dict[str, Any], list[Any]]:
    deployment = Deployment(catalog())
    data = TieredGate(deployment, codes, areas)
    drills, checks = drills_for(["T1"], "abc123", deployment, deployment, data, geography=LA)
    report = DrillRunner("unit", deployment.clock).run(["T1"], checks)
    return deployment, {c.check: c for c in report.checks}, drills


def test_a_county_receives_its_districts_rows_and_a_district_its_own_and_both_grants_are_withdrawn() -> None:
    deployment, checks, drills = drilled()
    view = checks["subscriber-view"]
    assert view.verdict == "pass", view.reason
    place = two_tier_place(catalog(), LA)
    assert place is not None
    assert (f"county drill-abc123-t1-county ({place.county}) received the 6 rows of its districts {place.district} "
            f"and {place.sibling} and none of {place.elsewhere}") in view.reason
    assert f"district drill-abc123-t1-district ({place.district}) its own 3 and none of {place.sibling}'s" in \
        view.reason
    assert view.reason.startswith("3 rows of ")       # the single-tier view's own reason comes first
    requests = {r.body: r for r in deployment.governance.requests()}
    county, district = requests["drill-abc123-t1-county"], requests["drill-abc123-t1-district"]
    assert county.areas == tuple(sorted(LA.areas_served(place.county))) and district.areas == (place.district,)
    assert county.fields == district.fields == ("dob", "lsoa", "sex")
    # Every drill grant was withdrawn through the ladder, and the catalog is the one from before the drill.
    assert not [g for g in deployment.governance.state.grants.values() if is_drill_body(g["subscriber"])]
    assert tear_down(drills) == [] and deployment.current() == catalog()
    assert all(checks[name].verdict == "pass" for name in ("grant-withdrawn", "revocation", "misroute"))


def test_a_gate_that_routes_a_county_like_a_district_fails_the_view_for_the_county() -> None:
    # Rows matched by their district alone against each body's own areas: a county's districts never match.
    _, checks, drills = drilled(lambda row: {row["ltla"]}, areas="areas")
    view = checks["subscriber-view"]
    assert view.verdict == "fail"
    assert "county drill-abc123-t1-county: 6 of 6 rows it must receive were not delivered" in view.reason, view.reason
    assert "district drill-abc123-t1-district" not in view.reason      # the district's view is right
    assert tear_down(drills) == []      # its grants were withdrawn all the same


def test_a_gate_that_gives_a_district_its_countys_rows_fails_the_view_for_the_district() -> None:
    place = two_tier_place(catalog(), LA)
    assert place is not None
    _, checks, _ = drilled(lambda row: both(row) | ({place.district} if row["utla"] == place.county else set()))
    view = checks["subscriber-view"]
    assert view.verdict == "fail"
    assert f"district drill-abc123-t1-district: 3 rows of {place.sibling} were delivered, outside its areas" in \
        view.reason, view.reason


def authority(code: str, county: str | None = None) -> LocalAuthority:
    tier = Tier.COUNTY if code.startswith("E10") else Tier.LTLA_ONLY if county else Tier.UNITARY
    return LocalAuthority(code, code, tier, county or code, "E12000004", "E92000001")


def test_the_two_tier_place_is_a_county_nobody_serves_when_there_is_one() -> None:
    table = LaTable([authority("E10000001"), authority("E07000001", "E10000001"), authority("E07000002", "E10000001"),
                     authority("E10000002"), authority("E07000003", "E10000002"), authority("E07000004", "E10000002"),
                     authority("E10000003"), authority("E07000005", "E10000003"), authority("E06000001")])
    served = {"bodies": {"shire": {"kind": "local", "served_areas": ["E07000002"]},
                         "ukhsa": {"kind": "national", "served_areas": [a.code for a in table]}}}
    place = two_tier_place(served, table)
    assert place is not None
    # E10000001 has a district a council serves; E10000003 has one district only: E10000002 it is.
    assert (place.county, place.district, place.sibling) == ("E10000002", "E07000003", "E07000004")
    assert (place.elsewhere, place.other_county) == ("E07000001", "E10000001")
    everywhere = {"bodies": {"shire": {"kind": "local", "served_areas": [a.code for a in table]}}}
    assert two_tier_place(everywhere, table) is not None     # rows of a twin reach drill bodies alone anyway
    one = LaTable([authority("E10000001"), authority("E07000001", "E10000001"), authority("E07000002", "E10000001")])
    assert two_tier_place(served, one) is None


def test_a_row_named_by_its_county_alone_is_placed_in_no_district() -> None:
    blaby, leicestershire = "E07000129", "E10000018"
    care_home = {"cqc_location_id": "1-1", "utla": leicestershire, "ltla": blaby}
    t4 = {"jurisdiction": ["utla"], "fields": {"utla": {"tags": ["geography:utla"]}, "ltla": {"tags": []}}}
    assert not placed_in_district(t4, care_home, blaby)     # the county receives it, no district does
    t6 = {"jurisdiction": ["utla"], "fields": {"lsoa": {"tags": ["geography:lsoa"]}}}
    assert placed_in_district(t6, {"utla": leicestershire, "lsoa": "E01025634"}, blaby)     # by its LSOA
    t7 = {"jurisdiction": ["ltla"], "fields": {}}
    assert placed_in_district(t7, {"ltla": blaby}, blaby) and not placed_in_district(t7, {"ltla": "E07000130"},
                                                                                       blaby)
