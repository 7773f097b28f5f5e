"""A sink's YAML configuration (`accord connect run CONFIG.yaml`), checked with pydantic; every problem is named
with its file, line and field, as the catalog loader does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class SinkConfig(_Strict):
    sink: Literal["postgres"]
    body: Name
    role: Name  # one role's deliveries, read with that role's own Kafka login
    kafka: KafkaLogin
    registry: RegistryLogin
    postgres: PostgresTarget
    deliveries: list[Delivery] = Field(min_length=1)
    receipts: ReceiptsLogin | None = None

    def topics(self) -> list[str]:
        return [delivery_topic(self.body, self.role, d.stream) for d in self.deliveries]

    def kafka_user(self) -> str:
        return self.kafka.username or subscriber_user(self.body, self.role)


class SinkConfigError(ConfigError):
    """The config file is invalid; `problems` holds one `file:line: field: what is wrong` line per problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n  ".join([f"sink config {path} is invalid; fix each line below", *problems]))


def load(path: Path) -> SinkConfig:
    """The checked config; relative file names in it are read from the config's own folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read sink config {path}: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SinkConfigError(path, [f"{path}:{mark.line + 1 if mark else 1}: YAML error: {exc}"]) from exc
    if not isinstance(data, dict) or node is None:
        raise SinkConfigError(path, [f"{path}:1: expected a mapping starting with `sink: postgres`"])
    try:
        config = SinkConfig.model_validate(data)
    except ValidationError as exc:
        raise SinkConfigError(path, [f"{path}:{_line(node, e['loc'])}: {_field(e['loc'])}: {e['msg']}"
                                     for e in exc.errors(include_url=False)]) from exc
    return _resolved(config, path.parent)


def _resolved(config: SinkConfig, base: Path) -> SinkConfig:
    def at(p: Path) -> Path:
        return p if p.is_absolute() else base / p
    postgres, receipts = config.postgres, config.receipts
    if receipts is not None:
        receipts = receipts.model_copy(update={
            "key_file": at(receipts.key_file),
            "token_file": at(receipts.token_file or config.registry.token_file)})
    return config.model_copy(update={
        "receipts": receipts,
        "kafka": config.kafka.model_copy(update={"password_file": at(config.kafka.password_file)}),
        "registry": config.registry.model_copy(update={"token_file": at(config.registry.token_file)}),
        "postgres": postgres.model_copy(update={
            "password_file": None if postgres.password_file is None else at(postgres.password_file)}),
    })


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
