"""The local Prometheus's configuration, and what a user who is not root is told when a Debian package is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import SetupError
from broker.local import prometheus_server, toolchain


def test_accords_services_are_scraped_without_credentials_and_opa_with_the_scraper_token(tmp_path: Path) -> None:
    token = tmp_path / "scraper.token"
    config = prometheus_server.scrape_config({"api": "127.0.0.1:9101", "opa": "127.0.0.1:8181"}, token)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"accord-api", "opa"}
    assert "authorization" not in jobs["accord-api"]
    assert jobs["accord-api"]["static_configs"] == [{"targets": ["127.0.0.1:9101"]}]
    assert jobs["opa"]["authorization"] == {"type": "Bearer", "credentials_file": str(token)}
    assert config["rule_files"] == [str(prometheus_server.RULES)]
    assert prometheus_server.RULES.is_file()


def test_a_missing_package_is_named_to_a_user_who_is_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(SetupError, match=r"apt-get install prometheus"):
        toolchain.apt_install("prometheus", "Prometheus is not installed: apt-get install prometheus")
