"""Runs the registry process: replay the schemas topic, follow it, serve the REST API."""

from __future__ import annotations

import uvicorn

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_changelog import Changelog
from broker.api.auth import Guard
from broker.api.readiness import add_readiness
from broker.api.registry_app import create_registry_app
from broker.config import Settings
from broker.domain.topics import SCHEMAS_TOPIC
from broker.runtime.probes import dependency_probes
from broker.services.registry import Registry


def open_registry(kafka: KafkaAccess, topic: str = SCHEMAS_TOPIC) -> tuple[Registry, Changelog]:
    """A registry caught up with the log and following it; close the changelog when done."""
    registry = Registry()
    changelog = Changelog(kafka, topic, registry.apply, client_id="accord-registry")
    registry.bind(changelog)
    changelog.start()
    return registry, changelog


def serve(settings: Settings, kafka: KafkaAccess, host: str, port: int) -> None:
    registry, changelog = open_registry(kafka)
    try:
        app = create_registry_app(registry, settings.max_request_bytes, guard=Guard.from_settings(settings))
        add_readiness(app, dependency_probes(settings, kafka) | {"schemas log": changelog.follower_problem})
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        changelog.close()
