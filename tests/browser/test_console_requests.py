"""Access requests in a real browser, against the real governance service, OPA, Kafka and gate: Cornwall's DPH asks
for T6 from its template, the National Immunisation System's IG lead and its Caldicott guardian approve, each signed
in as themselves; the request page then shows the measured time from approval to first record. Another body cannot
see the request by URL. The request form is filled and sent by keyboard alone. Every page is screenshotted and checked
by axe-core."""

from __future__ import annotations

import re
import time
import uuid

import httpx
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from broker.adapters.governance_http import AccessRequests, GovernanceClient
from broker.demo.synthetic import vaccination_cells
from broker.domain.control import GRANT_PREFIX
from broker.local.stack import Endpoints
from tests.browser.browser_support import axe_violations, click_through, screenshot, sign_in_link, start_console_gate
from tests.browser.test_console import axe_source, bearer_token, heading, session_cookie, sign_in
from tests.conftest import control_writer
from tests.integration.gate_support import publish, specimen_day
from tests.integration.governance_process import wait_for

__all__ = ["axe_source"]     # the module's fixture, shared with test_console.py

T6, TEMPLATE = "nis.vaccination-uptake", "t6-vaccination-uptake"
CELL = ["as_at_date", "lsoa", "utla", "age_band", "ethnicity_group", "dose", "vaccinated_n", "eligible_n"]


def checked_by_axe(browser: webdriver.Chrome, source: str, name: str) -> None:
    assert axe_violations(browser, source) == [], name
    assert screenshot(browser, name).stat().st_size > 10_000


def still_needed(browser: webdriver.Chrome) -> str:
    return str(browser.find_element(By.ID, "still-needed").text)


def test_a_request_is_made_reviewed_by_two_roles_and_its_first_record_timed_through_the_browser(
        services: Endpoints, console_url: str, browser: webdriver.Chrome, axe_source: str) -> None:
    gate = start_console_gate(services, "console-requests-worker")
    writer = control_writer(services.kafka, client_id="console-requests-cleanup")
    ident = ""
    try:
        # Cornwall's DPH asks from the template.
        sign_in(browser, sign_in_link(console_url, "cornwall-council", "dph", "Cornwall DPH"))
        browser.get(f"{console_url}/requests")
        checked_by_axe(browser, axe_source, "requests")
        click_through(browser, browser.find_element(By.ID, f"new-{TEMPLATE}"))
        assert heading(browser) == f"Request {T6}"
        checked_by_axe(browser, axe_source, "request-new")
        for name in CELL:
            browser.find_element(By.ID, f"field-{name}").click()
        browser.find_element(By.ID, "backfill").send_keys("P28D")
        # Short: the grant stays in the shared governance log, and every governance service started later puts it
        # back on the control topic, so the tombstone at the end alone would not end it for later tests.
        browser.find_element(By.ID, "duration").clear()
        browser.find_element(By.ID, "duration").send_keys("PT5M")
        browser.find_element(By.ID, "justification").send_keys(
            f"Uptake lags in three Cornish LSOAs ({uuid.uuid4().hex[:6]}); we need cells by ethnic group.")
        click_through(browser, browser.find_element(By.ID, "send-request"))
        ident = heading(browser)
        assert browser.find_element(By.ID, "state").text == "awaiting"
        assert "Your request was sent" in browser.page_source
        assert still_needed(browser).startswith("0 of 2") and "caldicott-guardian" in still_needed(browser)
        assert not browser.find_elements(By.ID, "approve")       # the requester never reviews its own request
        checked_by_axe(browser, axe_source, "request-awaiting")

        # Another body sees nothing of it, by the list or by URL.
        sign_in(browser, sign_in_link(console_url, "hackney-council", "dph", "Hackney DPH"))
        browser.get(f"{console_url}/requests")
        assert ident not in browser.page_source
        browser.get(f"{console_url}/requests/{ident}")
        assert heading(browser) == "You cannot do this" and "Cornish" not in browser.page_source
        with httpx.Client(base_url=console_url, cookies=session_cookie(browser)) as client:
            refused = client.get(f"/requests/{ident}")
            assert refused.status_code == 403 and "Cornish" not in refused.text
            forged = client.post(f"/requests/{ident}/approvals", data={"csrf": "not-the-token", "reason": "x"})
            assert forged.status_code == 403 and "security token" in forged.text
            # With the session's own token the console sends it, and the governance API refuses another body.
            browser.get(f"{console_url}/requests")
            csrf = str(browser.find_element(By.NAME, "csrf").get_attribute("value"))
            acted = client.post(f"/requests/{ident}/approvals", data={"csrf": csrf, "reason": "we approve"})
            assert acted.status_code == 403 and "may not review it" in acted.text, acted.text[-600:]

        # The publisher's IG lead finds it waiting, approves; one of two, the Caldicott guardian still needed.
        sign_in(browser, sign_in_link(console_url, "nis", "ig-lead", "NIS IG lead"))
        browser.get(f"{console_url}/requests")
        assert browser.find_elements(By.CSS_SELECTOR, f'#waiting [data-request="{ident}"]')
        checked_by_axe(browser, axe_source, "requests-waiting-for-review")
        browser.get(f"{console_url}/requests/{ident}")
        # Its deadline counts down live beside the UTC stamp.
        wait_for(lambda: bool(re.fullmatch(r"\((\d+ d )?(\d+ h )?\d+ min \d+ s left\)", "".join(
            n.text for n in browser.find_elements(By.CSS_SELECTOR, "time[data-countdown] + .accord-countdown")))),
            "the request's live countdown")
        click_through(browser, browser.find_element(By.ID, "approve"))          # no reason: the form says so
        assert "There is a problem" in browser.page_source and "Enter the reason" in browser.page_source
        checked_by_axe(browser, axe_source, "request-review-errors")
        browser.find_element(By.ID, "reason").send_keys("Need and purpose made out.")
        click_through(browser, browser.find_element(By.ID, "approve"))
        assert "Your approval was recorded" in browser.page_source
        assert still_needed(browser).startswith("1 of 2") and "one caldicott-guardian" in still_needed(browser)
        assert not browser.find_elements(By.ID, "approve")       # one review per person
        checked_by_axe(browser, axe_source, "request-one-of-two")

        # The Caldicott guardian approves: the agreement is instantiated and live.
        sign_in(browser, sign_in_link(console_url, "nis", "caldicott-guardian", "NIS Caldicott guardian"))
        browser.get(f"{console_url}/requests/{ident}")
        browser.find_element(By.ID, "reason").send_keys("Proportionate; restricted channel only.")
        click_through(browser, browser.find_element(By.ID, "approve"))
        assert browser.find_element(By.ID, "state").text == "live"
        assert "NIS IG lead" in browser.page_source and "NIS Caldicott guardian" in browser.page_source

        # Cornwall's cells flow; the requester's page shows the measured approval to first record.
        sign_in(browser, sign_in_link(console_url, "cornwall-council", "dph", "Cornwall DPH"))
        last = [0.0]

        def timed() -> bool:
            # A cell published before the gate applied the grant is rightly not Cornwall's: publish now and then.
            if time.monotonic() - last[0] > 5:
                publish(services, T6, vaccination_cells(specimen_day(), {"cornwall": 2}, seed=len(ident) + 17))
                last[0] = time.monotonic()
            browser.get(f"{console_url}/requests/{ident}")
            return "seconds" in browser.find_element(By.ID, "approval-to-first-record").text
        wait_for(timed, "the request page to show approval to first record", timeout_s=120)
        shown = browser.find_element(By.ID, "approval-to-first-record").text
        assert float(shown.split()[0]) >= 0
        print(f"\napproval to first record, as the console shows it: {shown}")
        checked_by_axe(browser, axe_source, "request-live-first-record")
    finally:
        if ident:
            writer.append(f"{GRANT_PREFIX}request-{ident}", None)    # later tests must not find Cornwall granted T6
        writer.close()
        gate.stop()


def press(browser: webdriver.Chrome, *keys: str) -> None:
    ActionChains(browser).send_keys(*keys).perform()


def tab_to(browser: webdriver.Chrome, ident: str, backwards: bool = False) -> None:
    """Tab (or Shift+Tab) until the element with `ident` has the focus."""
    for _ in range(80):
        if browser.switch_to.active_element.get_attribute("id") == ident:
            return
        press(browser, Keys.SHIFT + Keys.TAB if backwards else Keys.TAB)
    raise AssertionError(f"Tab never reached #{ident}")


def test_the_request_form_works_by_keyboard_alone(console_url: str, governance_url: str,
                                                  browser: webdriver.Chrome, axe_source: str) -> None:
    sign_in(browser, sign_in_link(console_url, "leicester-city-council", "dph", "Leicester DPH"))
    browser.get(f"{console_url}/requests")
    tab_to(browser, f"new-{TEMPLATE}")
    page = browser.find_element(By.TAG_NAME, "html")
    press(browser, Keys.ENTER)
    wait_for(lambda: not _alive(page), "the form to open")
    assert heading(browser) == f"Request {T6}"

    # Sent with no justification: the API's 400 is shown in the error summary and beside the field.
    tab_to(browser, "field-lsoa")
    press(browser, Keys.SPACE)
    tab_to(browser, "send-request")
    page = browser.find_element(By.TAG_NAME, "html")
    press(browser, Keys.ENTER)
    wait_for(lambda: not _alive(page), "the form's answer")
    assert browser.title.startswith("Error:")
    assert browser.find_element(By.ID, "justification-error").text.endswith("A request needs a justification: "
                                                                            "say why the data is needed")
    assert browser.find_element(By.ID, "field-lsoa").is_selected()       # what was filled in is kept
    checked_by_axe(browser, axe_source, "request-new-errors")

    # The summary's link takes the focus to the field; the rest by Tab, Space and Enter.
    summary_link = browser.find_element(By.CSS_SELECTOR, ".govuk-error-summary a")
    assert str(summary_link.get_attribute("href")).endswith("#justification")
    for _ in range(80):
        if browser.switch_to.active_element == summary_link:
            break
        press(browser, Keys.TAB)
    press(browser, Keys.ENTER)
    wait_for(lambda: browser.switch_to.active_element.get_attribute("id") == "justification",
             "the error summary's link to focus the field")
    press(browser, f"Keyboard only {uuid.uuid4().hex[:6]}: excess cases in two Leicester wards.")
    for name in ("dose", "utla"):                                         # back up to the fields
        tab_to(browser, f"field-{name}", backwards=True)
        press(browser, Keys.SPACE)
    tab_to(browser, "send-request")
    page = browser.find_element(By.TAG_NAME, "html")
    press(browser, Keys.ENTER)
    wait_for(lambda: not _alive(page), "the request page")
    ident = heading(browser)
    assert browser.find_element(By.ID, "state").text == "awaiting"
    fields_row = browser.find_element(By.XPATH, "//dt[text()='Fields']/following-sibling::dd").text
    assert set(fields_row.split(", ")) == {"lsoa", "utla", "dose"}
    # Ended, so a later run may ask again (one open request per body, role and template).
    with GovernanceClient(governance_url) as api:
        assert AccessRequests(api).refuse(bearer_token("nis", "ig-lead"), ident, "test over")["state"] == "refused"
    browser.get(f"{console_url}/requests/{ident}")
    assert browser.find_element(By.ID, "state").text == "refused"       # history kept after it ended
    checked_by_axe(browser, axe_source, "request-refused")


def _alive(element: WebElement) -> bool:
    try:
        _ = element.tag_name
        return True
    except StaleElementReferenceException:
        return False
