"""Driving Debian's Chromium headless (Selenium with Debian's chromedriver), the console served in this process on a
free loopback port, and axe-core (npm, fetched at set-up) injected into each page.

Screenshots of every page are saved under `test-artifacts/console/` at the top of the checkout (ignored by git): the
pages as a person sees them, for review without running the tests.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from broker.config import Settings
from broker.local.stack import Endpoints
from broker.local.toolchain import REPO_ROOT
from broker.runtime.gate import GateEndpoints, GateThread
from broker.security.api_tokens import SIGN_IN, issue, signing_key

ARTIFACTS = REPO_ROOT / "test-artifacts" / "console"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1000")
SERIOUS = ("serious", "critical")
# The gate workers of these tests, in a consumer group of their own that the console measures the delivery lag of
# (its Kafka user may describe the groups named `accord-gate*`).
GATE_GROUP = f"accord-gate-console-{uuid.uuid4().hex[:8]}"


def browser_binaries() -> tuple[str, str] | None:
    """Debian's chromium and chromedriver (`make test-tools` installs them as root), or None when missing."""
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    return None if chromium is None or driver is None else (chromium, driver)


@contextmanager
def chromium(user_data: Path) -> Iterator[webdriver.Chrome]:
    found = browser_binaries()
    assert found is not None
    options = Options()
    options.binary_location = found[0]
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data}")
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` on a free loopback port in a thread of this process; its URL while the block runs."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="console", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the console did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def sign_in_link(url: str, body: str, role: str, person: str) -> str:
    """A one-time link as `accord credentials token --link` prints it, signed with the session's key."""
    token = issue(signing_key(Settings().secrets_dir), body, role, person, dt.timedelta(minutes=15),
                  dt.datetime.now(dt.UTC), use=SIGN_IN)
    return f"{url}/sign-in?link={token}"


def axe_violations(driver: webdriver.Chrome, axe_source: str) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page the driver shows."""
    driver.execute_script(axe_source)
    found: list[dict[str, Any]] = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.map(n => n.target.join(' '))}))), e => done([{id: 'axe-error', impact: 'critical',"
        " help: String(e), nodes: []}]));")
    return [v for v in found if v.get("impact") in SERIOUS]


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """The whole page as a PNG under ARTIFACTS."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, max(1000, min(height, 8000)))
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
    return path


def start_console_gate(services: Endpoints, worker: str) -> GateThread:
    """A gate worker in GATE_GROUP (the first one starts at the end of the ingest topics; later ones resume)."""
    settings = Settings(gate_group=GATE_GROUP, gate_start_from="latest", opa_token_file=services.opa_token_file)
    return GateThread(GateEndpoints(services.kafka, services.opa_url, services.registry_url), settings, worker).start()


def click_through(driver: webdriver.Chrome, element: Any) -> None:
    """Click `element` and wait until the page it leads to has replaced this one."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element("tag name", "html")
    element.click()
    WebDriverWait(driver, 60).until(expected_conditions.staleness_of(page))
