"""Protocols for the outside world; adapters implement them, unit tests use in-memory fakes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from broker.domain.schemas import RegisteredSchema


@dataclass(frozen=True)
class Evaluation:
    """A rule's value and the engine's id for the decision (OPA's `decision_id`; None when it keeps no log)."""

    result: Any
    decision_id: str | None


class PolicyEngine(Protocol):
    """Where Rego policies and their data live and sharing decisions are evaluated (OPA).

    Policies arrive in a signed bundle the engine loads itself; only data is written through this port.
    """

    def ready(self) -> bool:
        """Whether the engine is up with its policies (OPA: its signed bundle verified and activated)."""

    def put_data(self, path: str, document: Mapping[str, Any]) -> None:
        """Replace the data document at `path` (slash-separated, e.g. 'accord/agreements')."""

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> Any:
        """The value of `rule` (dotted, e.g. 'accord.sharing.decision') for `input_doc`; None if undefined."""

    def evaluate_with_id(self, rule: str, input_doc: Mapping[str, Any]) -> Evaluation:
        """As `evaluate`, with the id under which the engine logged the decision, for the audit trail."""


class SchemaRegistry(Protocol):
    """Where Avro schemas are registered under subjects and looked up by global id (Confluent's REST API).

    Every method raises broker.errors.RegistryError carrying the registry's status and error code.
    """

    def register(self, subject: str, schema: str) -> int:
        """The global id of `schema` (Avro JSON text) under `subject`; registering it again returns the same id."""

    def schema_by_id(self, schema_id: int) -> str:
        """The Avro JSON text of the schema with this global id (404/40403 if none)."""

    def latest(self, subject: str) -> RegisteredSchema:
        """The newest version registered under `subject` (404/40401 if the subject is unknown)."""

    def set_compatibility(self, subject: str, mode: str) -> None:
        """Set the subject's compatibility mode (e.g. NONE), as PUT /config/{subject} does."""


class Notifier(Protocol):
    """Tells a body about a governance event (webhooks); queued, so a slow receiver never holds up a decision."""

    def notify(self, body: str, notification: Mapping[str, Any]) -> None:
        """Queue `notification` (JSON-able, with at least "event_id" and "type") for `body`; never blocks or raises."""
