"""Probes of what a service depends on, for its `/ready`: Kafka (a cluster description), OPA (its bundle
activated) and Accord's HTTP services (answering), each within a couple of seconds."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import describe_cluster
from broker.errors import ConfigError, ServiceError

TIMEOUT_S = 2.0
Probe = Callable[[], str | None]  # services/readiness.Probe: None when fine, else why not


def kafka_probe(kafka: KafkaAccess) -> Probe:
    def probe() -> str | None:
        try:
            describe_cluster(kafka, timeout_ms=int(TIMEOUT_S * 1000))
        except (ServiceError, ConfigError) as exc:
            return str(exc)
        return None
    return probe


def http_probe(what: str, url: str) -> Probe:
    """`url` answers 200 (OPA's `/health?bundles` only once its signed bundle is active)."""
    def probe() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
                status = int(answer.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (urllib.error.URLError, OSError) as exc:
            return f"{what} at {url} is unreachable: {getattr(exc, 'reason', exc)}"
        return None if status == 200 else f"{what} at {url} answered {status}"
    return probe


def opa_probe(opa_url: str) -> Probe:
    return http_probe("OPA", f"{opa_url.rstrip('/')}/health?bundles")


def registry_probe(registry_url: str) -> Probe:
    return http_probe("the schema registry", f"{registry_url.rstrip('/')}/")
