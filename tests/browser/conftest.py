"""The console served in this process against the session's Kafka and OPA (as its own Kafka user), and one headless
Chromium for the module; skipped where Debian's chromium and chromedriver are missing (`make test-tools`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium import webdriver

from broker.adapters.kafka_access import KafkaAccess
from broker.api.console.app import create_console_app
from broker.config import Settings
from broker.domain.kafka_acls import SERVICE_USERS
from broker.local.stack import Endpoints
from broker.runtime.console import open_console
from tests.browser.browser_support import browser_binaries, chromium, serving


@pytest.fixture(scope="module")
def console_url(services: Endpoints, applied_catalog: dict[str, Any],
                kafka_as: Callable[[str], KafkaAccess]) -> Iterator[str]:
    with open_console(Settings(opa_url=services.opa_url), kafka_as(SERVICE_USERS["console"])) as console, \
            serving(create_console_app(console)) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    if browser_binaries() is None:
        pytest.skip("Debian's chromium and chromedriver are not installed (`make test-tools` installs them as root)")
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver
