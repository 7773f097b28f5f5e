"""A sink's YAML configuration (`accord connect run CONFIG.yaml`), checked with pydantic; every problem is named
with its file, line and field, as the catalog loader does."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from broker.domain.kafka_acls import subscriber_user
from broker.domain.topics import delivery_topic
from broker.errors import ConfigError

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
Column = Annotated[str, Field(min_length=1, max_length=63)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaLogin(_Strict):
    bootstrap: str = Field(min_length=1)
    username: str | None = None  # default: the role's own Kafka login, <body>.<role>
    password_file: Path
    tls: bool = False


class RegistryLogin(_Strict):
    url: str = Field(pattern=r"^https?://")
    token_file: Path


class PostgresTarget(_Strict):
    dsn: str = Field(pattern=r"^postgres(ql)?://")
    password_file: Path | None = None


class ReceiptsLogin(_Strict):
    """Proof of delivery: sign a receipt for each stored batch with the body's key and send it to Accord's API."""

    key_file: Path                  # the body's receipt private key (`accord credentials receipt-key`), 0600
    api_url: str = Field(pattern=r"^https?://")
    token_file: Path | None = None  # an API token of the body and role; default: the registry's token file


class Delivery(_Strict):
    stream: Name
    table: Column | None = None
    key: list[Column] = []


class _Sink(_Strict):
    """What every sink's config has: one role's deliveries, read with that role's own Kafka login and decoded with
    the registry; and, optionally, receipts for what it stores."""

    body: Name
    role: Name
    kafka: KafkaLogin
    registry: RegistryLogin
    receipts: ReceiptsLogin | None = None

    def streams(self) -> list[str]:
        raise NotImplementedError

    def topics(self) -> list[str]:
        return [delivery_topic(self.body, self.role, stream) for stream in self.streams()]

    def kafka_user(self) -> str:
        return self.kafka.username or subscriber_user(self.body, self.role)


class SinkConfig(_Sink):
    sink: Literal["postgres"]
    postgres: PostgresTarget
    deliveries: list[Delivery] = Field(min_length=1)

    def streams(self) -> list[str]:
        return [d.stream for d in self.deliveries]


class WebhookRetry(_Strict):
    """Attempts per batch, the waits between them doubling from `first_backoff_s` up to `max_backoff_s`."""

    max_attempts: int = Field(default=8, ge=1, le=1000)
    first_backoff_s: float = Field(default=0.5, gt=0, le=3600)
    max_backoff_s: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _cap_above_first(self) -> WebhookRetry:
        if self.max_backoff_s < self.first_backoff_s:
            raise ValueError(f"max_backoff_s ({self.max_backoff_s}) is below first_backoff_s ({self.first_backoff_s})")
        return self


class WebhookTarget(_Strict):
    url: str
    secret_file: Path  # the shared secret the receiver verifies `Accord-Signature` with
    state_dir: Path  # positions and the dead letter; one per config
    batch: int = Field(default=100, ge=1, le=10_000)  # records per POST at most
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    retry: WebhookRetry = WebhookRetry()

    @field_validator("url")
    @classmethod
    def _https_or_loopback(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"{url!r} is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} must be an https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("the URL must not carry credentials: the receiver checks Accord-Signature instead")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ValueError(f"{url!r} would send the records unencrypted: use https:// (plain http is for a "
                             "receiver on this machine's loopback only)")
        return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookDelivery(_Strict):
    stream: Name


class WebhookSinkConfig(_Sink):
    """`sink: webhook`: one role's deliveries POSTed, signed, in batches of JSON to the subscriber's endpoint."""

    sink: Literal["webhook"]
    webhook: WebhookTarget
    deliveries: list[WebhookDelivery] = Field(min_length=1)

    def streams(self) -> list[str]:
        return [d.stream for d in self.deliveries]


class FilesTarget(_Strict):
    directory: Path  # what the council's SFTP or file-share sync picks up: complete files and their manifests
    format: Literal["csv", "parquet"] = "csv"
    max_rows: int | None = Field(100_000, ge=1, le=10_000_000)  # a file closes after this many rows ...
    max_seconds: float | None = Field(300.0, gt=0, le=7 * 24 * 3600)  # ... or this long after its first row

    @model_validator(mode="after")
    def _closes(self) -> FilesTarget:
        if self.max_rows is None and self.max_seconds is None:
            raise ValueError("max_rows and max_seconds are both null: a file would never be closed")
        return self


class FileDelivery(_Strict):
    stream: Name
    prefix: Name | None = None  # files are <prefix>-<sequence>.<format>; default: the stream's name


class FileSinkConfig(_Sink):
    sink: Literal["files"]
    files: FilesTarget
    deliveries: list[FileDelivery] = Field(min_length=1)

    @field_validator("deliveries")
    @classmethod
    def _prefixes_differ(cls, deliveries: list[FileDelivery]) -> list[FileDelivery]:
        prefixes = [d.prefix or d.stream for d in deliveries]
        if len(set(prefixes)) < len(prefixes):
            raise ValueError("two deliveries would write files of the same prefix: give each its own `prefix`")
        return deliveries

    def streams(self) -> list[str]:
        return [d.stream for d in self.deliveries]


AnySinkConfig = SinkConfig | FileSinkConfig | WebhookSinkConfig
KINDS: dict[str, type[SinkConfig] | type[FileSinkConfig] | type[WebhookSinkConfig]] = {
    "postgres": SinkConfig, "files": FileSinkConfig, "webhook": WebhookSinkConfig}


class SinkConfigError(ConfigError):
    """The config file is invalid; `problems` holds one `file:line: field: what is wrong` line per problem."""

    def __init__(self, path: Path, problems: list[str], what: str = "sink") -> None:
        self.problems = tuple(problems)
        super().__init__("\n  ".join([f"{what} config {path} is invalid; fix each line below", *problems]))


def _parse(path: Path) -> tuple[dict[str, Any], yaml.Node]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read connector config {path}: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SinkConfigError(path, [f"{path}:{mark.line + 1 if mark else 1}: YAML error: {exc}"]) from exc
    if not isinstance(data, dict) or node is None:
        raise SinkConfigError(path, [f"{path}:1: expected a mapping starting with `sink: {' or '.join(KINDS)}` "
                                     "(or `source: ...`)"])
    return data, node


def _validated(path: Path, node: yaml.Node, kind: type[BaseModel], data: dict[str, Any], what: str = "sink") -> Any:
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise SinkConfigError(path, [f"{path}:{_line(node, e['loc'])}: {_field(e['loc'])}: {e['msg']}"
                                     for e in exc.errors(include_url=False)], what) from exc


def load(path: Path) -> AnySinkConfig:
    """The checked config; relative file names in it are read from the config's own folder."""
    data, node = _parse(path)
    if "source" in data and "sink" not in data:
        raise SinkConfigError(path, [f"{path}:{_line(node, ('source',))}: source: this configures a source; "
                                     "`accord connect run` runs it"])
    kind = KINDS.get(str(data.get("sink")))
    if kind is None:
        known = " or ".join(repr(k) for k in KINDS)
        raise SinkConfigError(path, [f"{path}:{_line(node, ('sink',))}: sink: Input should be {known}"])
    config: AnySinkConfig = _validated(path, node, kind, data)
    return _resolved(config, path.parent)


def load_source(path: Path) -> Any:
    """A source's checked config (connectors/sources/config.py), its files read from the config's own folder."""
    from connectors.sources.config import SOURCE_KINDS, resolved

    data, node = _parse(path)
    kind = SOURCE_KINDS.get(str(data.get("source")))
    if kind is None:
        known = " or ".join(repr(k) for k in SOURCE_KINDS)
        raise SinkConfigError(path, [f"{path}:{_line(node, ('source',))}: source: Input should be {known}"], "source")
    return resolved(_validated(path, node, kind, data, "source"), path.parent)


def is_source(path: Path) -> bool:
    """Whether the config at `path` configures a source (`source:`) rather than a sink."""
    data, _ = _parse(path)
    return "source" in data and "sink" not in data


def _resolved(config: AnySinkConfig, base: Path) -> AnySinkConfig:
    """`config` with every file it names read from `base` (the config's own folder) unless absolute."""
    def at(p: Path) -> Path:
        return p if p.is_absolute() else base / p
    receipts = config.receipts
    if receipts is not None:
        receipts = receipts.model_copy(update={
            "key_file": at(receipts.key_file),
            "token_file": at(receipts.token_file or config.registry.token_file)})
    update: dict[str, Any] = {
        "receipts": receipts,
        "kafka": config.kafka.model_copy(update={"password_file": at(config.kafka.password_file)}),
        "registry": config.registry.model_copy(update={"token_file": at(config.registry.token_file)})}
    if isinstance(config, SinkConfig):
        target = config.postgres
        update["postgres"] = target.model_copy(update={
            "password_file": None if target.password_file is None else at(target.password_file)})
    elif isinstance(config, FileSinkConfig):
        update["files"] = config.files.model_copy(update={"directory": at(config.files.directory)})
    else:
        hook = config.webhook
        update["webhook"] = hook.model_copy(update={"secret_file": at(hook.secret_file),
                                                   "state_dir": at(hook.state_dir)})
    return config.model_copy(update=update)


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "(top)"


def _line(node: yaml.Node, loc: tuple[Any, ...]) -> int:
    """The line of the deepest part of `loc` the file has (a missing field: the line of its parent)."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = [v for k, v in node.value if k.value == part]
            if not found:
                break
            node = found[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return int(node.start_mark.line) + 1
