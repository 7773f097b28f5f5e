"""A source's YAML configuration (`accord connect run CONFIG.yaml` with `source: files|...`), checked with pydantic
like a sink's (connectors/config.py names every problem with its file, line and field)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from connectors.config import Name, RegistryLogin, _Strict

SourceName = Annotated[str, Field(min_length=1, max_length=150, pattern=r"^[a-z0-9][a-z0-9._-]*$")]


class ApiLogin(_Strict):
    """Accord's API as the publisher reaches it: `POST /streams/{stream}/records` with this token."""

    url: str = Field(pattern=r"^https?://")
    token_file: Path
    timeout_s: float = Field(default=60.0, gt=0, le=600)


class Batching(_Strict):
    """Rows per batch (one POST, one Idempotency-Key, one stored position), the JSON bytes a POST may carry
    (below the API's body limit, 1 MiB by default) and how many batches are POSTed at once."""

    rows: int = Field(default=2000, ge=1, le=10_000)
    max_bytes: int = Field(default=900_000, ge=1_000, le=100_000_000)
    in_flight: int = Field(default=4, ge=1, le=32)  # batches POSTed at once; positions are stored in order


class _Source(_Strict):
    """What every source's config has: its name (part of every Idempotency-Key: one name per source of a body and
    stream), the stream, the state directory, the API login, the stream's schema (a file, or the registry) and the
    column of each field whose column is named otherwise."""

    name: SourceName
    stream: Name
    state_dir: Path
    api: ApiLogin
    schema_file: Path | None = None
    registry: RegistryLogin | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    batch: Batching = Batching()

    @model_validator(mode="after")
    def _schema_known(self) -> _Source:
        if (self.schema_file is None) == (self.registry is None):
            raise ValueError("give the stream's schema as `schema_file` (its .avsc) or `registry` (url, token_file), "
                             "one of the two")
        return self

    def resolve_files(self, at: Callable[[Path], Path]) -> dict[str, Any]:
        """This kind's own fields that name files, each through `at` (read from the config's folder unless
        absolute): a kind with such fields overrides this."""
        return {}


class FilesInput(_Strict):
    """A file, or a watched directory of them (`watch: true`): files matching `pattern` taken in name order, each
    once (a ledger in the state directory keyed by name, size and SHA-256); a file is taken once its size and
    modification time have not changed for `settle_s`, and never while it ends in `.partial`."""

    path: Path
    format: Literal["csv", "jsonl", "parquet"] | None = None  # default: from the file name's suffix
    pattern: str = "*"
    watch: bool = False
    poll_s: float = Field(default=2.0, gt=0, le=3600)
    settle_s: float = Field(default=2.0, ge=0, le=3600)
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8-sig"


class FileSourceConfig(_Source):
    source: Literal["files"]
    files: FilesInput

    def resolve_files(self, at: Callable[[Path], Path]) -> dict[str, Any]:
        return {"files": self.files.model_copy(update={"path": at(self.files.path)})}


AnySourceConfig = FileSourceConfig
SOURCE_KINDS: dict[str, type[_Source]] = {"files": FileSourceConfig}


def resolved(config: _Source, base: Path) -> Any:
    """`config` with every file it names read from `base` (the config's own folder) unless absolute."""
    def at(p: Path) -> Path:
        return p if p.is_absolute() else base / p
    update: dict[str, Any] = {
        "state_dir": at(config.state_dir),
        "api": config.api.model_copy(update={"token_file": at(config.api.token_file)}),
        "schema_file": None if config.schema_file is None else at(config.schema_file),
        "registry": None if config.registry is None else config.registry.model_copy(
            update={"token_file": at(config.registry.token_file)})}
    update.update(config.resolve_files(at))
    return config.model_copy(update=update)
