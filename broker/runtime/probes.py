"""What each of Accord's processes checks for its `/ready`: the services it calls, and its own loop."""

from __future__ import annotations

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.readiness_probes import http_probe, kafka_probe, opa_probe, registry_probe
from broker.config import Settings
from broker.services.readiness import Probe


def dependency_probes(settings: Settings, kafka: KafkaAccess, registry_url: str | None = None,
                      governance_url: str | None = None) -> dict[str, Probe]:
    """Kafka always; OPA when the settings name it (every service's guard asks it); the registry and the
    governance service when this process calls them."""
    probes: dict[str, Probe] = {"kafka": kafka_probe(kafka)}
    if settings.opa_url:
        probes["opa"] = opa_probe(settings.opa_url)
    if registry_url:
        probes["registry"] = registry_probe(registry_url)
    if governance_url:
        probes["governance"] = http_probe("the governance service", f"{governance_url.rstrip('/')}/health")
    return probes
