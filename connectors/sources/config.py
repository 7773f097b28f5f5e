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


class HttpAuth(_Strict):
    """A token sent in a header (`Authorization: Bearer <token>` by default), read from a file (read again for each
    request, so one replaced on disk is used from the next) or an environment variable."""

    token_file: Path | None = None
    token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    header: str = Field(default="Authorization", min_length=1)
    scheme: str = "Bearer"  # the header's value is "<scheme> <token>"; "" sends the token alone

    @model_validator(mode="after")
    def _one_place(self) -> HttpAuth:
        if (self.token_file is None) == (self.token_env is None):
            raise ValueError("give the token as `token_file` or `token_env`, one of the two")
        return self


class HttpPaging(_Strict):
    """Where an answer's rows are (a dotted path; "" for an answer that is the list) and how the next page is
    found: `next`, a path to its link or number (the dashboard's `pagination.next`), or `page_param`, a query
    parameter counting pages from `first_page` until a page is empty or the page at path `last` is read."""

    rows: str = "data"
    next: str | None = None
    page_param: str | None = None
    first_page: int = Field(default=1, ge=0)
    last: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> HttpPaging:
        if self.next is not None and self.page_param is not None:
            raise ValueError("page by `next` (a link in the answer) or by `page_param` (a page number), not both")
        return self


class HttpWatermark(_Strict):
    """The field of a row that grows (`date`, `updated_at`), and the query parameter the highest value published so
    far is sent in at the next poll, written as `format` (`{value}` stands for it). `key`: the fields that name a
    row, for rows sharing a watermark value (default: the whole row)."""

    field: str = Field(min_length=1)
    param: str | None = None
    format: str = "{value}"
    key: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _value_in_format(self) -> HttpWatermark:
        if "{value}" not in self.format:
            raise ValueError("format must hold {value}, where the watermark goes")
        return self


class HttpRetry(_Strict):
    """Attempts per request on no answer, 5xx, 408 or 429; waits doubling from `first_backoff_s` up to
    `max_backoff_s`, or as long as the API's `Retry-After` asks."""

    max_attempts: int = Field(default=8, ge=1, le=1000)
    first_backoff_s: float = Field(default=1.0, gt=0, le=3600)
    max_backoff_s: float = Field(default=60.0, gt=0, le=3600)


class HttpInput(_Strict):
    url: str = Field(pattern=r"^https?://")
    params: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    auth: HttpAuth | None = None
    paging: HttpPaging = HttpPaging()
    watermark: HttpWatermark
    requests_per_s: float | None = Field(default=None, gt=0, le=1000)
    retry: HttpRetry = HttpRetry()
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    follow: bool = False  # false: read what there is and stop; true: poll again every poll_s until stopped
    poll_s: float = Field(default=300.0, gt=0, le=7 * 24 * 3600)


class HttpSourceConfig(_Source):
    source: Literal["http"]
    http: HttpInput

    def resolve_files(self, at: Callable[[Path], Path]) -> dict[str, Any]:
        auth = self.http.auth
        if auth is None or auth.token_file is None:
            return {}
        return {"http": self.http.model_copy(update={"auth": auth.model_copy(
            update={"token_file": at(auth.token_file)})})}


class PostgresInput(_Strict):
    """A table (or one SELECT) read in order of `watermark` then `tiebreak` (columns that make a row's place unique,
    e.g. its id); `safety_lag_s` leaves rows whose timestamp watermark is newer than that to a later poll."""

    dsn: str = Field(pattern=r"^postgres(ql)?://")
    password_file: Path | None = None
    table: str | None = None
    query: str | None = None
    watermark: str = Field(min_length=1, max_length=63)
    tiebreak: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(default_factory=list)
    safety_lag_s: float = Field(default=0.0, ge=0, le=7 * 24 * 3600)
    follow: bool = False
    poll_s: float = Field(default=10.0, gt=0, le=7 * 24 * 3600)

    @model_validator(mode="after")
    def _table_or_query(self) -> PostgresInput:
        if (self.table is None) == (self.query is None):
            raise ValueError("give `table` or `query`, one of the two")
        return self


class PostgresSourceConfig(_Source):
    source: Literal["postgres"]
    postgres: PostgresInput

    def resolve_files(self, at: Callable[[Path], Path]) -> dict[str, Any]:
        target = self.postgres
        if target.password_file is None:
            return {}
        return {"postgres": target.model_copy(update={"password_file": at(target.password_file)})}


AnySourceConfig = FileSourceConfig | HttpSourceConfig | PostgresSourceConfig
SOURCE_KINDS: dict[str, type[_Source]] = {"files": FileSourceConfig, "http": HttpSourceConfig,
                                         "postgres": PostgresSourceConfig}


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

