"""The console served in this process against the session's Kafka, OPA, registry and a governance service of its own
(as `accord governance serve` runs it), reading Kafka as its own user; one headless Chromium for the module. Skipped
where Debian's chromium and chromedriver are missing (`make test-tools` installs them as root)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver

from broker.adapters.kafka_access import KafkaAccess
from broker.api.console.app import create_console_app
from broker.config import Settings
from broker.domain.kafka_acls import SERVICE_USERS
from broker.local.stack import Endpoints
from broker.runtime.console import open_console
from tests.browser.browser_support import GATE_GROUP, browser_binaries, chromium, serving
from tests.integration.governance_process import GovernanceProcess


@pytest.fixture(scope="module")
def governance_url(services: Endpoints, applied_catalog: dict[str, Any], local_settings: Settings,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process = GovernanceProcess(services, local_settings, tmp_path_factory.mktemp("console-governance"))
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture(scope="module")
def console_url(services: Endpoints, governance_url: str, kafka_as: Callable[[str], KafkaAccess]) -> Iterator[str]:
    settings = Settings(opa_url=services.opa_url, registry_url=services.registry_url, governance_url=governance_url,
                        gate_group=GATE_GROUP)
    with open_console(settings, kafka_as(SERVICE_USERS["console"])) as console, \
            serving(create_console_app(console)) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    if browser_binaries() is None:
        pytest.skip("Debian's chromium and chromedriver are not installed (`make test-tools` installs them as root)")
    with chromium(Path(tmp_path_factory.mktemp("chromium-profile"))) as driver:
        yield driver
