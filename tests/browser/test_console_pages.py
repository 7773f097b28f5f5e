"""The console's Emergency and Publisher pages in a real browser against the real services: each page rendered,
screenshotted and checked by axe-core; a declarer declares and lifts a regional emergency through the browser while
a non-declarer sees no form and is refused by POST; a publisher pages through its quarantined rows and another body
cannot reach them by URL."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from typer.testing import CliRunner

from broker.adapters.governance_http import GovernanceClient
from broker.api.console.publisher import PAGE
from broker.cli import app as cli
from broker.config import Settings
from broker.local.stack import Endpoints
from broker.security.audit_keys import public_key_path
from tests.browser.browser_support import axe_violations, click_through, screenshot, sign_in_link
from tests.browser.test_console import bearer_token, heading, session_cookie, sign_in
from tests.conftest import bearer, kafka_env
from tests.integration.gate_support import T1
from tests.integration.governance_process import wait_for

# A region no other test declares for (South West); the test lifts it again whatever happens.
REGION = "E12000009"
DECLARER = ("dhsc", "governance-board", "DHSC board member")
PUBLISHER = ("ukhsa", "ig-lead", "UKHSA IG lead")


@pytest.fixture(scope="module")
def axe_source() -> str:
    path = Settings().console_assets_dir / "axe-core" / "axe.min.js"
    return path.read_text(encoding="utf-8")


def _case(specimen_id: str, **overrides: Any) -> dict[str, Any]:
    case = {
        "specimen_id": specimen_id, "nhs_number": None, "name": "Alex Example", "dob": "1984-03-07",
        "sex": "FEMALE", "ethnicity": None, "address": "1 Example Road, Leicester", "postcode": "LE1 1AA",
        "occupation": None, "specimen_date": "2020-06-22", "lab_report_date": "2020-06-23", "test_type": "PCR",
        "pillar": "PILLAR_2", "lsoa": "E01013627", "msoa": "E02002807", "ltla": "E06000016", "utla": "E06000016",
    }
    return case | overrides


def _levels(governance_url: str) -> dict[str, Any]:
    with GovernanceClient(governance_url) as api:
        answer: dict[str, Any] = api.call("GET", "/emergency", bearer_token("accord", "service"))["levels"]
        return answer


def test_the_new_pages_render_with_nothing_serious_for_axe(console_url: str, browser: webdriver.Chrome,
                                                           axe_source: str) -> None:
    sign_in(browser, sign_in_link(console_url, *PUBLISHER))
    for path, name in (("/emergency", "emergency"), ("/publisher", "publisher"),
                       (f"/publisher/{T1}", "publisher-quarantine")):
        browser.get(f"{console_url}{path}")
        assert heading(browser) not in ("Page not found", "You cannot do this", "Something went wrong"), path
        assert axe_violations(browser, axe_source) == [], path
        assert screenshot(browser, name).stat().st_size > 10_000
    browser.get(f"{console_url}/publisher")
    assert T1 in browser.page_source and "cannot be asked" not in browser.page_source
    sign_in(browser, sign_in_link(console_url, *DECLARER))
    browser.get(f"{console_url}/emergency")
    assert browser.find_elements(By.ID, "declare-form")
    assert axe_violations(browser, axe_source) == [], "the emergency page with the declarer's forms"
    screenshot(browser, "emergency-declarer")


def test_a_declarer_declares_and_lifts_an_emergency_through_the_browser(
        console_url: str, governance_url: str, browser: webdriver.Chrome, axe_source: str) -> None:
    assert REGION not in _levels(governance_url)
    reason = f"Exercise {uuid.uuid4().hex[:6]}: a regional outbreak"
    try:
        sign_in(browser, sign_in_link(console_url, *DECLARER))
        browser.get(f"{console_url}/emergency")
        browser.find_element(By.ID, "scope").clear()
        browser.find_element(By.ID, "scope").send_keys(REGION)
        browser.find_element(By.ID, "level-emergency").click()
        browser.find_element(By.ID, "reason").send_keys(reason)
        click_through(browser, browser.find_element(By.ID, "declare"))
        assert "The emergency level was declared" in browser.page_source
        levels = browser.find_element(By.ID, "levels").text
        assert REGION in levels and reason in levels
        assert _levels(governance_url)[REGION]["level"] == "emergency"
        screenshot(browser, "emergency-declared")

        # A declaration without a reason is refused with the form's error, and nothing changes.
        click_through(browser, browser.find_element(By.ID, "lift"))
        assert heading(browser) == "Emergency" and "Enter the reason for lifting the level" in browser.page_source
        assert axe_violations(browser, axe_source) == [], "the emergency page with an error"
        assert REGION in _levels(governance_url)

        browser.find_element(By.ID, "lift-scope").clear()
        browser.find_element(By.ID, "lift-scope").send_keys(REGION)
        browser.find_element(By.ID, "lift_reason").send_keys("The outbreak is contained")
        click_through(browser, browser.find_element(By.ID, "lift"))
        assert "The emergency level was lifted" in browser.page_source
        assert REGION not in browser.find_element(By.ID, "levels").text
        assert REGION not in _levels(governance_url)
    finally:
        if REGION in _levels(governance_url):
            with GovernanceClient(governance_url) as api:
                api.call("POST", "/emergency/lift", bearer_token(*DECLARER[:2]),
                         {"scope": REGION, "reason": "the test ended"})


def test_a_non_declarer_sees_no_form_and_is_refused_by_post(console_url: str, governance_url: str,
                                                            browser: webdriver.Chrome) -> None:
    sign_in(browser, sign_in_link(console_url, "leicester-city-council", "dph", "Director of Public Health"))
    browser.get(f"{console_url}/emergency")
    assert heading(browser) == "Emergency"
    assert not browser.find_elements(By.ID, "declare-form") and not browser.find_elements(By.ID, "lift-form")
    assert "Only an emergency declarer" in browser.page_source
    assert browser.find_elements(By.ID, "break-glass-form")     # a DPH may break glass (in an emergency)
    csrf = browser.find_element(By.NAME, "csrf").get_attribute("value")
    with httpx.Client(base_url=console_url, cookies=session_cookie(browser)) as client:
        for path, data in (("/emergency/declare", {"scope": REGION, "level": "emergency", "reason": "no"}),
                           ("/emergency/lift", {"scope": REGION, "lift_reason": "no"})):
            refused = client.post(path, data={"csrf": csrf, **data})
            assert refused.status_code == 403, path
            assert "only an emergency declarer may change a level" in refused.text
        assert client.get("/emergency/declare").status_code in (403, 405)
    assert REGION not in _levels(governance_url)


def test_a_publisher_pages_through_its_quarantined_rows_and_another_body_cannot(
        services: Endpoints, console_url: str, browser: webdriver.Chrome) -> None:
    prefix = f"CPQ-{uuid.uuid4().hex[:8]}"
    ours = {f"{prefix}-future": _case(f"{prefix}-future", specimen_date="2099-01-01"),
            f"{prefix}-nopostcode": _case(f"{prefix}-nopostcode", postcode="")}
    # Ours first, then a page's worth of other refused rows, so ours are on a later page (newest first); and one
    # good row: the ingest API registers the stream's schema with the first row it accepts.
    filler = [_case(f"{prefix}-filler-{n}", specimen_date="2099-01-01") for n in range(PAGE)]
    records = [*ours.values(), *filler, _case(f"{prefix}-good")]
    response = httpx.post(f"{services.api_url}/streams/{T1}/records", json={"records": records},
                          headers=bearer(*PUBLISHER[:2]), timeout=30)
    assert response.status_code == 200 and response.json()["quarantined"] == PAGE + 2, response.text

    sign_in(browser, sign_in_link(console_url, *PUBLISHER))
    browser.get(f"{console_url}/publisher")
    versions = browser.find_element(By.XPATH, f"//caption[contains(., 'Schema versions of {T1}')]/..").text
    assert "specimen_id" in versions          # the registered schema's fields, by version
    click_through(browser, browser.find_element(By.LINK_TEXT, f"Quarantined rows of {T1}"))
    found: dict[str, str] = {}
    pages = 1
    for _ in range(20):                    # newest first: other tests' rows quarantined since may come before
        for row in browser.find_elements(By.CSS_SELECTOR, "#quarantine tbody tr"):
            for ident in ours:
                if ident in row.text:
                    found[ident] = row.text
        if len(found) == len(ours) or not browser.find_elements(By.ID, "next-page"):
            break
        click_through(browser, browser.find_element(By.ID, "next-page"))
        pages += 1
    assert set(found) == set(ours) and pages >= 2
    assert f"Page {pages}" in browser.page_source and browser.find_elements(By.CSS_SELECTOR, "a[rel=prev]")
    assert "date-not-future" in found[f"{prefix}-future"] and "specimen_date" in found[f"{prefix}-future"]
    assert "required" in found[f"{prefix}-nopostcode"] and "postcode" in found[f"{prefix}-nopostcode"]
    screenshot(browser, "publisher-quarantine-ours")

    # Another body: its Publisher page lists none of UKHSA's streams, and the quarantine's URL is refused.
    sign_in(browser, sign_in_link(console_url, *DECLARER))
    browser.get(f"{console_url}/publisher")
    assert T1 not in browser.page_source
    browser.get(f"{console_url}/publisher/{T1}")
    assert heading(browser) == "You cannot do this"
    assert "dhsc sees the quarantine of its own streams only" in browser.page_source
    assert prefix not in browser.page_source
    with httpx.Client(base_url=console_url, cookies=session_cookie(browser)) as client:
        refused = client.get(f"/publisher/{T1}", params={"page": 2})
        assert refused.status_code == 403 and prefix not in refused.text


def test_the_audit_trail_is_searched_and_exported_for_governance_roles_only(
        services: Endpoints, console_url: str, browser: webdriver.Chrome, axe_source: str,
        tmp_path: Path) -> None:
    sign_in(browser, sign_in_link(console_url, *DECLARER))
    browser.get(f"{console_url}/audit")
    click_through(browser, browser.find_element(By.LINK_TEXT, "search the audit trail"))
    assert heading(browser) == "Search the audit trail"
    kinds = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#kind option")]
    assert "governance-event" in kinds        # the declarations of the tests above, at least, are chained
    browser.find_element(By.CSS_SELECTOR, "#kind option[value='governance-event']").click()
    browser.find_element(By.ID, "body").send_keys("dhsc")
    click_through(browser, browser.find_element(By.ID, "search"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#entries tbody tr")
    assert rows and all("governance-event" in row.text for row in rows)
    assert axe_violations(browser, axe_source) == [], "the audit search"
    screenshot(browser, "audit-search")
    browser.get(f"{console_url}/audit/search?since=2999-01-01")
    assert "0 matching entries" in browser.find_element(By.ID, "found").text
    browser.get(f"{console_url}/audit/search?since=yesterday")
    assert heading(browser) == "There is a problem with the request" and "must be a date" in browser.page_source

    with httpx.Client(base_url=console_url, cookies=session_cookie(browser), timeout=60) as client:
        download = client.get("/audit/export.jsonl")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    trail = tmp_path / "accord-audit.jsonl"
    trail.write_bytes(download.content)
    assert len(trail.read_text().splitlines()) >= len(rows)
    checked = CliRunner().invoke(cli, ["audit", "verify", "--offline", "--key",
                                       str(public_key_path(Settings().secrets_dir)), str(trail)],
                                 env=kafka_env(services.kafka))
    assert checked.exit_code == 0 and checked.output.rstrip().endswith("ok"), checked.output

    # A DPH may not: by the page and by the download's URL.
    sign_in(browser, sign_in_link(console_url, "leicester-city-council", "dph", "Director of Public Health"))
    with httpx.Client(base_url=console_url, cookies=session_cookie(browser)) as client:
        for path in ("/audit/search", "/audit/export.jsonl"):
            refused = client.get(path)
            assert refused.status_code == 403 and "may not" in refused.text, path


def test_why_a_row_was_not_delivered_is_answered_for_the_subscribers_own_rows_only(
        services: Endpoints, console_url: str, browser: webdriver.Chrome, axe_source: str) -> None:
    prefix = f"CPW-{uuid.uuid4().hex[:8]}"
    ours = _case(f"{prefix}-leicester", specimen_date="2099-01-01")
    theirs = _case(f"{prefix}-blaby", postcode="", ltla="E07000129", utla="E10000018")
    response = httpx.post(f"{services.api_url}/streams/{T1}/records", json={"records": [ours, theirs]},
                          headers=bearer(*PUBLISHER[:2]), timeout=30)
    assert response.status_code == 200 and response.json()["quarantined"] == 2, response.text

    sign_in(browser, sign_in_link(console_url, "leicester-city-council", "dph", "Director of Public Health"))
    browser.get(f"{console_url}/my-data/{T1}")
    click_through(browser, browser.find_element(By.LINK_TEXT, "Why was a row not delivered to me?"))
    browser.find_element(By.ID, "specimen").send_keys(ours["specimen_id"])
    click_through(browser, browser.find_element(By.ID, "ask"))
    answer = browser.find_element(By.ID, "answer").text
    assert "date-not-future (specimen_date)" in answer and "quarantined when it was published" in answer
    assert axe_violations(browser, axe_source) == [], "why-not"
    screenshot(browser, "my-data-why-not")

    # A row of another council's area: the same answer as for a row never refused, nothing of it shown.
    browser.get(f"{console_url}/my-data/{T1}/why-not?specimen={theirs['specimen_id']}")
    rules = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#answer li strong")]
    assert rules == ["Quarantine", "Row filter", "Required fields"]
    assert "no quarantine entry of yours matches" in browser.find_element(By.ID, "answer").text

    # A body with no subscription to the stream is refused by URL.
    sign_in(browser, sign_in_link(console_url, *DECLARER))
    browser.get(f"{console_url}/my-data/{T1}/why-not?specimen={ours['specimen_id']}")
    assert heading(browser) == "You cannot do this" and "date-not-future" not in browser.page_source


def test_break_glass_through_the_browser_lands_in_the_review_queue_and_a_refused_review_ends_it(
        console_url: str, governance_url: str, browser: webdriver.Chrome, axe_source: str) -> None:
    region, dph = "E12000005", ("birmingham-city-council", "dph", "Birmingham DPH")     # West Midlands
    justification = f"Exercise {uuid.uuid4().hex[:6]}: a cluster in a school, cases need a call today"
    with GovernanceClient(governance_url) as api:
        api.call("POST", "/emergency", bearer_token(*DECLARER[:2]),
                 {"scope": region, "level": "emergency", "reason": "a test of break-glass"})
        try:
            sign_in(browser, sign_in_link(console_url, *dph))
            browser.get(f"{console_url}/emergency")
            browser.find_element(By.CSS_SELECTOR, f"#stream option[value='{T1}']").click()
            browser.find_element(By.ID, "purpose").send_keys("health-protection")
            click_through(browser, browser.find_element(By.ID, "break-glass"))
            assert "There is a problem" in browser.page_source      # no justification: refused by the form
            assert "Enter the justification" in browser.page_source
            browser.find_element(By.CSS_SELECTOR, f"#stream option[value='{T1}']").click()
            browser.find_element(By.ID, "purpose").clear()
            browser.find_element(By.ID, "purpose").send_keys("health-protection")
            browser.find_element(By.ID, "justification").send_keys(justification)
            click_through(browser, browser.find_element(By.ID, "break-glass"))
            assert "Break-glass access was taken" in browser.page_source
            queue = browser.find_element(By.ID, "review-queue").text
            assert T1 in queue and dph[0] in queue
            review = next(d for d in api.call("GET", "/disputes", bearer_token(*dph[:2]))["disputes"]
                          if d.get("kind") == "break-glass-review" and d.get("justification") == justification)
            assert axe_violations(browser, axe_source) == [], "the review queue"
            screenshot(browser, "emergency-break-glass")

            # The publisher's IG lead reviews it after the fact, from the queue, and refuses: the access ends.
            sign_in(browser, sign_in_link(console_url, *PUBLISHER))
            browser.get(f"{console_url}/emergency")
            click_through(browser, browser.find_element(By.LINK_TEXT, review["id"]))
            browser.find_element(By.ID, "outcome-refused").click()
            browser.find_element(By.ID, "reason").send_keys("Not justified: the school's cases are already traced")
            click_through(browser, browser.find_element(By.ID, "decide"))
            assert "Your decision was recorded" in browser.page_source

            def decision() -> Any:
                return api.call("GET", f"/disputes/{review['id']}", bearer_token(*dph[:2]))["decision"]

            wait_for(lambda: decision() is not None, "the review's decision")
            assert decision()["outcome"] == "refused"
        finally:
            api.call("POST", "/emergency/lift", bearer_token(*DECLARER[:2]),
                     {"scope": region, "reason": "the test ended"})
