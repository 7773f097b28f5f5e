"""Loading the National Data Opt-out list: a file of NHS numbers in, keyed hashes out, the list on its topic replaced
whole (numbers no longer listed are taken off). The plain numbers are read, checked and hashed in memory, never
written anywhere nor put in a message."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker.domain.optout import changes, digest, normalise
from broker.errors import ConfigError


class OptOutLog(Protocol):
    """The list's compacted topic (broker/adapters/kafka_optout.py; an in-memory one in tests)."""

    def current(self) -> set[str]:
        """The digests in force."""

    def write(self, add: Iterable[str], remove: Iterable[str]) -> None:
        """Put `add` on the list and take `remove` off it (tombstones), all acknowledged before returning."""


@dataclass(frozen=True)
class Loaded:
    listed: int
    added: int
    removed: int


def read_list(path: Path, key: bytes) -> set[str]:
    """The digests of the NHS numbers in `path` (one a line; blank lines and `#` comments skipped). A line that is
    not an NHS number is a ConfigError naming the file and line, never the value: the file is sensitive."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the opt-out list {path}: {exc.__class__.__name__}") from None
    digests, problems = set(), []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            digests.add(digest(key, normalise(text)))
        except ValueError as exc:
            problems.append(f"{path}:{number}: {exc}")
    if problems:
        shown = "\n".join(problems[:20]) + (f"\n... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ConfigError(f"the opt-out list has {len(problems)} line(s) that are not NHS numbers; nothing was "
                          f"loaded. Fix or remove them:\n{shown}")
    return digests


def replace_list(log: OptOutLog, digests: set[str]) -> Loaded:
    """Make `digests` the list in force; what changed, in counts only."""
    add, remove = changes(log.current(), digests)
    log.write(add, remove)
    return Loaded(len(digests), len(add), len(remove))
