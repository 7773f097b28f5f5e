"""Protocols for the outside world; adapters implement them, unit tests use in-memory fakes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class PolicyEngine(Protocol):
    """Where Rego policies and their data live and sharing decisions are evaluated (OPA)."""

    def put_policy(self, module_id: str, source: str) -> None:
        """Load or replace one Rego module."""

    def put_data(self, path: str, document: Mapping[str, Any]) -> None:
        """Replace the data document at `path` (slash-separated, e.g. 'accord/agreements')."""

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> Any:
        """The value of `rule` (dotted, e.g. 'accord.sharing.decision') for `input_doc`; None if undefined."""
