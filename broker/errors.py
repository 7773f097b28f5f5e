"""Accord's errors: one root, so callers never import a library's error types.

    AccordError
    ├── ConfigError            bad settings or environment (names the variable and the fix)
    ├── SetupError             a toolchain is missing or a fetch/build failed (names what to install)
    ├── NotFoundError          a stream, subject or other named thing does not exist
    ├── IdempotencyConflict    an idempotency key reused for a different request (answered 409)
    ├── SerdeError             bytes that are not a valid Confluent-framed Avro record,
    │                          or a record that does not fit its schema
    ├── AuditError             the audit trail is malformed or fails verification (names the line or entry)
    ├── DrillError             a drill report is malformed, or a drill cannot run (names the file or setting)
    ├── AuthenticationError    an API token is missing, malformed, expired, revoked or not signed by Accord's key
    ├── GovernanceError        a dispute or declaration command breaks the rules (bad move, no reason)
    │   ├── NotAuthorisedError the acting body and role may not do this
    │   └── InvalidRequestError what a caller sent does not fit (an access request against its template)
    └── ServiceError           a service Accord runs or talks to failed
        ├── ServiceStartError  Kafka or OPA did not come up (carries the last lines of its log)
        ├── PolicyEngineError  OPA refused a policy, data or query
        ├── WriterFenced       another instance took over writing a shared log; this write was not committed
        └── RegistryError      the schema registry answered with an error or was unreachable (status 0)
"""

from __future__ import annotations


class AccordError(Exception):
    """Root of every error Accord raises on purpose."""


class ConfigError(AccordError):
    """A setting is missing or malformed."""


class SetupError(AccordError):
    """Something Accord needs on this machine is missing, or fetching/building it failed."""


class NotFoundError(AccordError):
    """A stream, subject or other named thing does not exist; the message lists what does."""


class IdempotencyConflict(AccordError):
    """A publish request's idempotency key was used before for a different body; nothing was published again."""


class ServiceError(AccordError):
    """A service Accord runs or talks to failed."""


class ServiceStartError(ServiceError):
    """A local service did not start; `log_tail` holds the last lines of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail

    def __str__(self) -> str:
        text = super().__str__()
        if self.log_tail:
            return f"{text}\n--- last lines of its log ---\n{self.log_tail}"
        return text


class PolicyEngineError(ServiceError):
    """OPA refused a policy, a data document or a query."""


class WriterFenced(ServiceError):
    """Another instance took over writing a log that one writer at a time may write; nothing was committed."""


class GovernanceError(AccordError):
    """A dispute, decision or declaration that the governance rules refuse; the message says which rule."""


class NotAuthorisedError(GovernanceError):
    """The acting body and role may not take this step (not a decider of the tier, a party, not a declarer)."""


class InvalidRequestError(GovernanceError):
    """What the caller sent does not fit its template or the catalog (answered 400); the message says what to fix."""


class SerdeError(AccordError):
    """Bytes are not a valid Confluent-framed Avro record, or a record does not fit its schema."""


class AuthenticationError(AccordError):
    """An API caller could not be authenticated; the message says why, never quoting the token."""


class DrillError(AccordError):
    """A drill report is malformed or not signed as it should be, or a drill was asked for what it cannot do."""


class AuditError(AccordError):
    """The audit trail is malformed or fails verification; the message names the line or entry."""


class RegistryError(ServiceError):
    """The schema registry refused a request or could not be reached.

    Mirrors Confluent's error body `{"error_code": 40401, "message": "..."}`; `status` is the HTTP status, 0 when
    no response arrived, and `error_code` is -1 when the registry gave none.
    """

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(status, error_code, message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def __str__(self) -> str:
        if self.status == 0:
            return f"schema registry unreachable: {self.message}"
        return f"schema registry error {self.error_code} (HTTP {self.status}): {self.message}"


class DeliveryRefused(AccordError):
    """A subscriber's right to a delivery has ended (revoked, expired, withdrawn), or Kafka's fence refuses it."""
