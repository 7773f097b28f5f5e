"""What an outside HTTP API answered an HTTP source (the JsonApi port of connectors/sources/pacing.py speaks it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, body and headers (names in lower case)."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
