"""The two-tier half of a flow's subscriber-view check. In two-tier England a county council (upper tier) receives
the rows of every one of its districts, and a district council (lower tier) its own district's rows only.

After the single-tier drill body's view passed, the drill adds two more drill bodies on the flow's drill stream: a
county and one of its districts (in a county no local body of the catalog serves, where there is one), switches both
on from the template's copy as the drill body was (the same tier, approved by the same reviewers), publishes rows of
the district, of a sibling district of the same county and of a district of another county, and checks that the
county received both districts' rows and not the other county's, the district its own only, each row once and as its
plan says. Their grants are then withdrawn through the ladder, as the drill body's is. Only drill bodies ask for a
drill stream, so none of these rows can reach a real subscriber.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from broker.domain.geography import LaTable, Tier
from broker.domain.grant_fields import LSOA_TAG
from broker.domain.ladder import Actor
from broker.domain.topics import delivery_topic
from broker.domain.trusts import TRUST_TAG
from broker.services.drill_records import BATCH, ENFORCED_WAIT_S, GATE_WAIT_S, POLL_S
from broker.services.drill_runner import Moments, Outcome, failed, not_run, passed
from broker.services.drill_streams import Row, expected_view, source_of, view_problems

if TYPE_CHECKING:
    from broker.services.drill_flows import FlowDrill

# Who decides a grant-contested dispute at its tier (drill_flows._deciders): the catalog, the dispute, its parties.
Deciders = Callable[[Mapping[str, Any], Mapping[str, Any], set[str]], "list[Actor] | None"]


@dataclass(frozen=True)
class TwoTierPlace:
    """Where the two-tier drill bodies sit: a county, the district the district body is, a sibling district of the
    same county, and a district of another county (`elsewhere`, in `other_county`)."""

    county: str
    district: str
    sibling: str
    elsewhere: str
    other_county: str


def two_tier_place(catalog: Mapping[str, Any], la: LaTable,
                   fits: Callable[[TwoTierPlace], bool] = lambda _: True) -> TwoTierPlace | None:
    """A county with two districts or more, one no local body of `catalog` serves any part of when there is one, and
    a district of another county (also unserved, when there is such a county), the first such place that `fits` (the
    drill can make rows of it that lie where they are meant to: a trust's rows lie in every district the trust
    serves); None when the table has none."""
    served = {code for b in (catalog.get("bodies") or {}).values() if b.get("kind") != "national"
              for code in b.get("served_areas") or ()}
    counties = [a.code for a in la if a.tier is Tier.COUNTY and len(la.districts_of(a.code)) >= 2]
    # Unserved counties first: a drill county then mirrors no council's place (sorted: stable from run to run).
    counties.sort(key=lambda code: (bool(la.areas_served(code) & served), code))
    for county in counties:
        districts = la.districts_of(county)
        for other in (c for c in counties if c != county):
            for district in districts:
                for sibling in (d for d in districts if d != district):
                    for elsewhere in la.districts_of(other):
                        place = TwoTierPlace(county, district, sibling, elsewhere, other)
                        if fits(place):
                            return place
    return None


def tier_bodies(drill_body: Mapping[str, Any], ident: str, place: TwoTierPlace, la: LaTable
                ) -> dict[str, dict[str, Any]]:
    """The county and district drill bodies (`<ident>-county`, `<ident>-district`), compiled as the catalog compiler
    compiles a council: a county serves itself and its districts, a district itself; like the drill body otherwise."""

    def entry(kind: str, tier: str, area: str) -> dict[str, Any]:
        served = sorted(la.areas_served(area))
        regions = sorted({a.region_code for code in served if (a := la.get(code)) is not None})
        return {**drill_body, "name": f"Accord drill body {ident}-{kind}", "kind": "local", "tier": tier,
                "areas": [area], "served_areas": served, "regions": regions}

    return {f"{ident}-county": entry("county", Tier.COUNTY.value, place.county),
            f"{ident}-district": entry("district", Tier.LTLA_ONLY.value, place.district)}


def placed_in_district(stream: Mapping[str, Any], row: Row, district: str) -> bool:
    """Whether the gate can place `row` of compiled catalog stream `stream` in `district`: one of its jurisdiction
    fields names the district, or it has an LSOA (a field tagged geography:lsoa; the gate resolves it to its district
    with the LSOA lookup in force), or it names an NHS trust (a field tagged geography:trust: the drill makes a
    district's rows as a trust serving it, which the gate places in every district the trust serves). A row named by
    its upper tier alone (T4's care homes) reaches the county only."""
    if any(row.get(name) == district for name in stream.get("jurisdiction") or ()):
        return True
    fields: Mapping[str, Mapping[str, Any]] = stream.get("fields") or {}
    return any(({LSOA_TAG, TRUST_TAG} & set(spec.get("tags") or ())) and row.get(name)
               for name, spec in fields.items())


@dataclass(frozen=True)
class Published:
    """The rows published for the two-tier views, by the `accord.source` of their deliveries."""

    district: dict[bytes, Row]
    sibling: dict[bytes, Row]
    elsewhere: dict[bytes, Row]


def tier_problems(who: str, want: Mapping[bytes, Row], withheld: Mapping[str, Mapping[bytes, Row]],
                  deliveries: Sequence[tuple[bytes, Row]], view: Callable[[Row, Row], list[str]]) -> list[str]:
    """How one body's deliveries differ from its rows: each of `want` once and as `view` says, none of `withheld`'s
    (by the area they were published in), and nothing else."""
    received = dict(deliveries)
    problems = []
    if twice := len(deliveries) - len(received):
        problems.append(f"{who}: {twice} deliveries repeat a row already delivered")
    if missing := [s for s in want if s not in received]:
        problems.append(f"{who}: {len(missing)} of {len(want)} rows it must receive were not delivered")
    for area, rows in withheld.items():
        if leaked := [s for s in rows if s in received]:
            problems.append(f"{who}: {len(leaked)} rows of {area} were delivered, outside its areas")
    known = {s for rows in (want, *withheld.values()) for s in rows}
    if unknown := [s for s in received if s not in known]:
        problems.append(f"{who}: {len(unknown)} delivered rows were not published by this drill")
    for source, row in received.items():
        if source in want and (wrong := view(want[source], row)):
            problems.append(f"{who}: row {source.decode()}: {'; '.join(wrong)}")
            break
    return problems


@dataclass
class TierViews:
    """One flow's subscriber-view check: the drill body's single-tier view, then the two-tier views."""

    drill: FlowDrill
    operator: Actor
    deciders: Deciders
    sleep: Callable[[float], None] = time.sleep
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)   # body → its live request

    def check(self, moments: Moments) -> Outcome:
        single = self.drill.subscriber_view(moments)
        if single.verdict != "pass" or self.drill.geography is None:
            return single   # without an LA table (a caller that gives none) the single-tier view alone
        place = two_tier_place(self.drill.original or {}, self.drill.geography, self._fits)
        if place is None:
            return not_run(f"{single.reason}; but the two-tier views were not checked: the LA table has no two "
                           "counties with two districts each where the drill can make rows that lie in one of them "
                           "and not the other")
        begun = self.drill.monotonic()
        try:
            problems, said = self._two_tier(place, moments)
        finally:
            withdrawn = self._withdraw(moments)
        seconds = round(self.drill.monotonic() - begun, 3)
        if problems or withdrawn:
            return failed("; ".join([*problems, *withdrawn]), seconds)
        return passed(f"{single.reason}; {said}", seconds)

    def _two_tier(self, place: TwoTierPlace, moments: Moments) -> tuple[list[str], str]:
        drill, records, twin = self.drill, self.drill.records, self.drill.twin
        assert records is not None and twin is not None and drill.geography is not None    # the view passed
        current = dict(drill.catalog.current() or {})
        if drill.body not in (current.get("bodies") or {}):
            return [f"the catalog in force is not the drill's (it has no drill body {drill.body})"], ""
        bodies = tier_bodies(current["bodies"][drill.body], drill.body, place, drill.geography)
        drill.api.call("PUT", "/catalog", self.operator, {"catalog": {
            **current, "bodies": {**current["bodies"], **bodies},
            "revision": f"{current.get('revision')}+two-tier"}})
        moments.note(drill.flow, f"drill bodies {', '.join(bodies)} added ({place.county} and its {place.district})")
        for body in bodies:
            if why := self._switch_on(body, moments):
                return [why], ""
        if why := self._enforced():
            return [why], ""
        published = self._publish(place)
        if isinstance(published, str):
            return [published], ""
        if why := self._through_gate():
            return [why], ""
        county, district = bodies
        stream = (((drill.original or {}).get("streams") or {}).get(twin.real) or {})
        stream_fields = sorted(stream.get("fields") or {})
        own = {s: r for s, r in published.district.items() if placed_in_district(stream, r, place.district)}
        unplaced = {s: r for s, r in published.district.items() if s not in own}

        def view(published_row: Row, row: Row) -> list[str]:
            return view_problems(expected_view(records.tier, stream_fields, published_row), row)

        def delivered(body: str) -> list[tuple[bytes, Row]]:
            return [(headers.get("accord.source", b""), value) for value, headers in drill.data.delivered(
                delivery_topic(body, records.role, twin.stream))] if drill.data is not None else []

        problems = tier_problems(
            f"county {county}", published.district | published.sibling, {place.elsewhere: published.elsewhere},
            delivered(county), view)
        withheld = {place.sibling: published.sibling, place.elsewhere: published.elsewhere}
        if unplaced:
            withheld[f"{place.district} that name its county alone"] = unplaced
        problems += tier_problems(f"district {district}", own, withheld, delivered(district), view)
        n = len(published.district)
        theirs = (f"its own {len(own)}" if own else
                  f"none of its own {n}, whose rows of {twin.real} name their upper tier alone,")
        return problems, (
            f"two-tier: county {county} ({place.county}) received the {2 * n} rows of its districts {place.district} "
            f"and {place.sibling} and none of {place.elsewhere} (in {place.other_county}); district {district} "
            f"({place.district}) {theirs} and none of {place.sibling}'s; each once, as the plan says, read as the "
            "drill's principal")

    def _switch_on(self, body: str, moments: Moments) -> str | None:
        """Request the drill body's tier for `body` and have the drill body's reviewers approve it; why not."""
        drill, records, twin = self.drill, self.drill.records, self.drill.twin
        assert records is not None and twin is not None
        asker = Actor(body, records.role, f"{records.role}@{body}.drill")
        made = drill.api.call("POST", "/requests", asker, {
            "template": twin.template, "purpose": twin.template_entry.get("purpose"),
            "duration": drill.request.get("duration") or "PT1H", "fields": sorted(records.tier.get("fields") or {}),
            "justification": f"Accord drill {drill.run}: the two-tier views of {drill.flow}."})
        for review in drill.request.get("reviews") or ():
            reviewer = Actor.from_json(review["actor"])
            made = drill.api.call("POST", f"/requests/{made['id']}/approvals", reviewer,
                                  {"reason": f"Accord drill {drill.run}: approved as the drill body's was."})
        if made.get("state") != "live":
            return f"request {made['id']} of {body} is {made.get('state')!r} after its reviewers approved, not live"
        self.grants[body] = made
        moments.note(drill.flow, f"request {made['id']} of {body} live")
        return None

    def _enforced(self) -> str | None:
        """Wait until a gate worker applied the two-tier grants (their control records); why not."""
        assert self.drill.data is not None
        offsets = [int(c["offset"]) for request in self.grants.values() for event in request.get("timeline") or ()
                   if event.get("type") == "request-enforced" for c in (event.get("data") or {}).get("control") or ()]
        if not offsets:
            return "the two-tier grants' answers name no control record that put them in force"
        if self.drill.data.enforced_at_ms(max(offsets), ENFORCED_WAIT_S) is None:
            return (f"no gate worker reported applying the two-tier grants (control offset {max(offsets)}) within "
                    f"{ENFORCED_WAIT_S:g} s")
        return None

    def _areas(self, place: TwoTierPlace) -> list[tuple[str, str, list[str]]]:
        """Where each batch's rows are made (area, its county) and the areas they must not lie in too: the sibling's
        not in the district, the other county's in none of the county's districts (a trust's rows lie in every
        district the trust serves; a council's in their own)."""
        assert self.drill.geography is not None
        county = [place.county, *self.drill.geography.districts_of(place.county)]
        return [(place.district, place.county, []), (place.sibling, place.county, [place.district]),
                (place.elsewhere, place.other_county, county)]

    def _fits(self, place: TwoTierPlace) -> bool:
        """Whether the drill can make every batch of `place`'s rows (a probe: nothing is published)."""
        drill = self.drill
        if drill.data is None or drill.twin is None:
            return True
        return all(drill.data.synthetic(drill.twin.real, area, county, 1, "probe", 0, avoiding) is not None
                   for area, county, avoiding in self._areas(place))

    def _publish(self, place: TwoTierPlace) -> Published | str:
        """Rows of the district, its sibling and the other county's district; why not, when they were refused."""
        drill, records, twin = self.drill, self.drill.records, self.drill.twin
        assert records is not None and twin is not None and drill.data is not None
        rows: list[dict[bytes, Row]] = []
        for n, (area, county, avoiding) in enumerate(self._areas(place)):
            made = drill.data.synthetic(twin.real, area, county, BATCH, f"DRILL-{drill.run}-tier{n}", 1000 + n,
                                        avoiding)
            if made is None:
                return f"the drill has no synthetic record generator for {twin.real}"
            outcomes = drill.data.publish(twin.stream, records.publisher, made)
            if refused := [o for o in outcomes if o.get("status") != "accepted"]:
                return (f"the ingest API quarantined the drill's synthetic records of {area}: "
                        f"{refused[0].get('reasons')}")
            rows.append({source_of(o): made[int(o["index"])] for o in outcomes})
        return Published(*rows)

    def _through_gate(self) -> str | None:
        drill = self.drill
        assert drill.data is not None and drill.twin is not None
        deadline = drill.monotonic() + GATE_WAIT_S
        while (behind := drill.data.gate_behind(drill.twin.stream)) != 0:
            if drill.monotonic() > deadline:
                return (f"the gate group has not processed the two-tier rows on {drill.twin.stream} within "
                        f"{GATE_WAIT_S:g} s ({'no position committed' if behind is None else f'{behind} behind'})")
            self.sleep(POLL_S)
        return None

    def _withdraw(self, moments: Moments) -> list[str]:
        """Each live grant of the two-tier bodies contested by the publisher and withdrawn by the ladder's deciders;
        what stayed live."""
        drill, problems = self.drill, []
        template = drill.twin.template_entry if drill.twin is not None else {}
        publisher = str(template.get("publisher"))
        contester = Actor(publisher, "ig-lead", f"ig-lead@{publisher}.drill")
        for body, request in list(self.grants.items()):
            grant = f"request-{request['id']}"
            raised = drill.api.call("POST", "/disputes", contester, {
                "kind": "grant-contested", "stream": template.get("stream"), "subscriber": body,
                "role": request.get("role"), "purpose": template.get("purpose"), "decision_id": grant,
                "justification": f"Accord drill {drill.run}: the two-tier grant is withdrawn at its end."})
            deciders = self.deciders(drill.original or {}, raised, {publisher, body})
            answer: dict[str, Any] = {}
            for decider in deciders or ():
                answer = drill.api.call("POST", f"/disputes/{raised['id']}/approvals", decider,
                                        {"outcome": "granted", "reason": f"Accord drill {drill.run}: withdrawn."})
            timeline = (answer.get("dispute") or {}).get("timeline") or ()
            if not any(grant in ((e.get("data") or {}).get("revoke_grants") or ()) for e in timeline):
                problems.append(f"grant {grant} of {body} was not withdrawn; it ends by itself after "
                                f"{request.get('duration')}")
                continue
            del self.grants[body]
            moments.note(drill.flow, f"grant {grant} of {body} withdrawn")
        return problems
