"""What Accord's API answers a publisher for each record of a request (the sources' Publisher port speaks it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PublishOutcome:
    """One record of a publish request, in order: accepted onto the stream, or quarantined with the reasons."""

    status: Literal["accepted", "quarantined"]
    reasons: tuple[str, ...] = ()
