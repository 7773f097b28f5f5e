"""A T1 drill on the real Kafka, OPA, API, gate and governance service checks the two-tier views too: a county drill
body received the rows of two of its districts and not another county's, a district drill body its own district's
only; and after the run no topic of its drill stream or drill bodies is left, while the real gate it ran beside goes
on delivering to a real subscriber without a failure."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from broker.adapters.kafka_admin import list_topics
from broker.config import Settings
from broker.demo.synthetic import positive_tests
from broker.domain.drills import DRILL_BODY_PREFIX
from broker.domain.geography_files import load_la_table
from broker.local.stack import Endpoints
from broker.runtime.drills import ControlCatalog, run_drill
from broker.services.drill_tiers import two_tier_place
from tests.integration.gate_support import T1, Receiver, end_offsets, publish, specimen_day, start_gate, topic_for
from tests.integration.test_access_requests import api_for, started
from tests.integration.test_drills import done_as_checked

LEICESTER_DPH = topic_for("leicester-city-council", "dph")


def test_a_t1_drill_checks_county_and_district_views_and_leaves_no_topic_behind(
        services: Endpoints, applied_catalog: dict[str, Any], receiver: Receiver, tmp_path: Path) -> None:
    gate = start_gate(services, "drill-tiers", f"drill-tiers-{uuid.uuid4().hex[:6]}")
    settings = Settings(gate_group=gate.settings.gate_group)
    service = started(services, "drill-tiers", run=uuid.uuid4().hex[:8])
    try:
        with api_for(services, service) as http:
            done = run_drill(settings, services.kafka, "", ["T1"], tmp_path, client=http, deployment="test",
                             api_url=services.api_url, registry_url=services.registry_url)
        checks = {c.check: c for c in done.report.checks}
        view = checks["subscriber-view"]
        assert done_as_checked(view) == "pass", view.reason
        place = two_tier_place(applied_catalog, load_la_table(settings.geography_dir))
        assert place is not None
        short = done.report.run.rsplit("-", 1)[1]
        body = f"{DRILL_BODY_PREFIX}{short}-t1"
        # Read from the bodies' own delivery topics, so they existed during the run.
        assert (f"county {body}-county ({place.county}) received the 6 rows of its districts {place.district} and "
                f"{place.sibling} and none of {place.elsewhere}") in view.reason, view.reason
        assert f"district {body}-district ({place.district}) its own 3 and none of {place.sibling}'s" in view.reason
        assert "(age_band, lsoa, sex)" in view.reason      # the single-tier view still comes first
        assert done.problems == (), done.problems       # every drill grant withdrawn, every topic deleted
        current = ControlCatalog(services.kafka, settings).current()
        assert current is not None and current["revision"] == applied_catalog["revision"]
        assert not [t for t in list_topics(services.kafka) if f"{DRILL_BODY_PREFIX}{short}-" in t]
        assert [t for t in list_topics(services.kafka) if t == LEICESTER_DPH]      # real topics are all there

        # The gate that served the drill still delivers a real subscriber's rows, once each.
        start = end_offsets(services.kafka, [LEICESTER_DPH])[LEICESTER_DPH]
        sources = publish(services, T1, positive_tests(specimen_day(), {"leicester": 2},
                                                       prefix=f"T{uuid.uuid4().hex[:6].upper()}"))
        got = receiver.records(LEICESTER_DPH, start, lambda _, headers: headers["accord.source"] in sources, want=2)
        assert sorted(h["accord.source"] for _, h in got) == sorted(sources)
        assert gate.failure is None
    finally:
        service.stop()
        gate.stop()
