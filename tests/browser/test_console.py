"""The console in a real browser: sign-in by one-time link, every page rendered (a screenshot of each), axe-core's
serious and critical findings, CSRF, and what one body may not see of another's."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from broker.config import Settings
from tests.browser.browser_support import axe_violations, click_through, screenshot, sign_in_link

PAGES = ("/", "/catalogue", "/my-data", "/disputes", "/audit", "/transparency")


@pytest.fixture(scope="module")
def axe_source() -> str:
    path = Settings().console_assets_dir / "axe-core" / "axe.min.js"
    return path.read_text(encoding="utf-8")


def sign_in(browser: webdriver.Chrome, link: str) -> None:
    browser.delete_all_cookies()
    browser.get(link)
    click_through(browser, browser.find_element(By.ID, "sign-in"))


def heading(browser: webdriver.Chrome) -> str:
    return str(browser.find_element(By.TAG_NAME, "h1").text)


def test_a_link_signs_in_once_and_is_refused_the_second_time(console_url: str, browser: webdriver.Chrome) -> None:
    link = sign_in_link(console_url, "leicester-city-council", "dph", "Director of Public Health")
    sign_in(browser, link)
    assert heading(browser) == "Accord Console"
    assert "Director of Public Health (dph, leicester-city-council)" in browser.page_source
    cookie = browser.get_cookie("accord_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    sign_in(browser, link)
    assert heading(browser) == "You could not be signed in"
    assert "this sign-in link was used already" in browser.page_source
    browser.get(f"{console_url}/catalogue")     # no session: back to the sign-in page
    assert heading(browser) == "Sign in to the Accord Console"


def test_every_page_renders_with_nothing_serious_for_axe(console_url: str, browser: webdriver.Chrome,
                                                        axe_source: str) -> None:
    shots: list[Path] = []
    browser.delete_all_cookies()
    for name, path in (("public-sign-in", "/sign-in"), ("public-transparency", "/transparency")):
        browser.get(f"{console_url}{path}")
        assert axe_violations(browser, axe_source) == [], path
        shots.append(screenshot(browser, name))
    link = sign_in_link(console_url, "leicester-city-council", "dph", "Director of Public Health")
    browser.get(link)
    assert axe_violations(browser, axe_source) == [], "the link's landing page"
    shots.append(screenshot(browser, "sign-in-with-link"))
    click_through(browser, browser.find_element(By.ID, "sign-in"))
    for path in PAGES:
        browser.get(f"{console_url}{path}")
        assert browser.find_elements(By.CSS_SELECTOR, "main h1"), path
        assert "Page not found" not in heading(browser) and "cannot" not in heading(browser), path
        assert axe_violations(browser, axe_source) == [], path
        shots.append(screenshot(browser, path.strip("/").replace("/", "-") or "start"))
    assert all(shot.stat().st_size > 10_000 for shot in shots)


def test_a_post_without_the_csrf_token_is_refused(console_url: str, browser: webdriver.Chrome) -> None:
    sign_in(browser, sign_in_link(console_url, "leicester-city-council", "dph", "Director of Public Health"))
    cookie = browser.get_cookie("accord_session")
    assert cookie is not None
    with httpx.Client(base_url=console_url, cookies={"accord_session": cookie["value"]}) as client:
        assert client.get("/catalogue").status_code == 200        # the session is good
        refused = client.post("/sign-out", data={"csrf": "not-the-token"})
        assert refused.status_code == 403 and "security token" in refused.text
        assert client.post("/sign-out").status_code == 403
        assert client.get("/catalogue").status_code == 200        # still signed in: nothing happened
    browser.get(f"{console_url}/")
    click_through(browser, browser.find_element(By.CSS_SELECTOR, "form.accord-sign-out button"))  # with the token
    assert heading(browser) == "Sign in to the Accord Console"
    browser.get(f"{console_url}/catalogue")
    assert heading(browser) == "Sign in to the Accord Console"
