"""The catalog's entries as frozen pydantic models: what a YAML file may say, checked key by key."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)

from broker.domain.geography import is_well_formed

Kind = Literal["national", "local"]
BodyTier = Literal["national", "county", "unitary", "ltla-only"]
Classification = Literal["open", "official", "official-sensitive", "commercially-sensitive", "special-category"]
LegalBasis = Literal[
    "copi-reg-3-4", "uk-gdpr-6-1-e", "uk-gdpr-9-2-h", "uk-gdpr-9-2-i", "dpa-2018-sch1-para3",
    "cca-2004", "dea-2017-part5", "public-health-directions-2020", "data-provision-notice", "not-personal-data",
]
EmergencyLevel = Literal["normal", "enhanced", "emergency"]
Transform = Literal["keep", "drop", "mask", "pseudonymise", "generalise"]
Method = Literal["age-band", "postcode-district", "lsoa"]
OtherFields = Literal["drop", "keep"]

SUBSCRIBER_AREAS = "subscriber-areas"
METHODS: tuple[str, ...] = ("age-band", "postcode-district", "lsoa")
_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
_STREAM_ID = re.compile(r"[a-z0-9][a-z0-9-]*\.[a-z0-9][a-z0-9-]*")
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a kebab-case id ([a-z0-9][a-z0-9-]*); ids become Kafka topic "
                         "segments, so use no dots, capitals, spaces or underscores")
    return value


def _stream_id(value: str) -> str:
    if not _STREAM_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a stream id: write <owner>.<name> in kebab-case, "
                         "as in the schema's accord.stream (e.g. ukhsa.positive-tests)")
    return value


def _field_name(value: str) -> str:
    if not _AVRO_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an Avro field name ([A-Za-z_][A-Za-z0-9_]*)")
    return value


def _la_code(value: str) -> str:
    if not is_well_formed(value):
        raise ValueError(f"{value!r} is not a GSS code (a letter and 8 digits, e.g. E06000016)")
    return value


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice; list it once")
        seen.add(value)
    return values


def _row_scope(value: object) -> str | tuple[str, ...]:
    # Hand-written rather than a Union so that errors read as one sentence, not one per union member.
    if value == SUBSCRIBER_AREAS:
        return SUBSCRIBER_AREAS
    if isinstance(value, list | tuple) and value and all(isinstance(code, str) for code in value):
        return _unique(tuple(_la_code(code) for code in value))
    raise ValueError(f"row_scope must be {SUBSCRIBER_AREAS!r} or a non-empty list of LA codes, not {value!r}")


Id = Annotated[str, AfterValidator(_id)]
StreamId = Annotated[str, AfterValidator(_stream_id)]
FieldName = Annotated[str, AfterValidator(_field_name)]
LaCode = Annotated[str, AfterValidator(_la_code)]
Text = Annotated[str, AfterValidator(_text)]
RowScope = Annotated[str | tuple[str, ...], PlainValidator(_row_scope)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)


class Origin(_Model):
    """Where an entry was written: its file, its path inside the file and the line of every key below it."""

    file: str
    prefix: tuple[str, ...] = ()
    lines: Mapping[str, int] = Field(default_factory=dict)

    def line(self, *parts: str | int) -> int:
        """The line of the deepest written key on the path; a missing key reports its nearest parent."""
        path = [*self.prefix, *(str(part) for part in parts)]
        while path:
            found = self.lines.get(".".join(path))
            if found is not None:
                return found
            path.pop()
        return self.lines.get("", 1)

    def at(self, *parts: str | int) -> str:
        """`file:line: dotted.path` for messages; the path is the one a reader sees in the file."""
        path = ".".join([*self.prefix, *(str(part) for part in parts)])
        return f"{self.file}:{self.line(*parts)}: {path}" if path else f"{self.file}:{self.line()}"


class Body(_Model):
    """A public body that publishes or subscribes; a local body is tied to the LA codes it covers."""

    id: Id
    name: Text
    kind: Kind
    tier: BodyTier
    areas: Annotated[tuple[LaCode, ...], AfterValidator(_unique)] = Field(default=(), validate_default=True)
    roles: Annotated[tuple[Id, ...], AfterValidator(_unique)] = ()

    @field_validator("tier")
    @classmethod
    def _tier_fits_kind(cls, tier: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if kind == "national" and tier != "national":
            raise ValueError(f"a national body has tier national, not {tier!r}")
        if kind == "local" and tier == "national":
            raise ValueError("a local body's tier is county, unitary or ltla-only, as in the LA table")
        return tier

    @field_validator("areas")
    @classmethod
    def _areas_fit_kind(cls, areas: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        kind = info.data.get("kind")
        if kind == "local" and not areas:
            raise ValueError("a local body needs at least one LA code in areas")
        if kind == "national" and areas:
            raise ValueError("a national body covers every area; remove areas (or make the body local)")
        return areas


class Stream(_Model):
    """A published stream; its schema (by `accord.stream`) must exist among the stream schemas."""

    id: StreamId
    owner: Id
    subject: Text | None = None
    classification: Classification
    jurisdiction: Annotated[tuple[FieldName, ...], AfterValidator(_unique)] | None = None

    @property
    def ingest_subject(self) -> str:
        return self.subject or f"ingest.{self.id}-value"


class FieldRule(_Model):
    """How one named field is delivered; a bare word in YAML (`keep`) means `{transform: keep}`."""

    transform: Transform
    method: Method | None = Field(default=None, validate_default=True)
    as_: FieldName | None = Field(default=None, alias="as", validate_default=True)
    at: FieldName | None = None
    from_: FieldName | None = Field(default=None, alias="from")
    keep_last: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _bare_word(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"transform": value}
        if not isinstance(value, Mapping):
            raise ValueError(f"a field rule is a transform (keep, drop, mask, pseudonymise) or a mapping with "
                             f"transform: and its method and params, not {value!r}")
        return value

    @field_validator("method")
    @classmethod
    def _method_fits(cls, method: str | None, info: ValidationInfo) -> str | None:
        transform = info.data.get("transform")
        if transform == "generalise" and method is None:
            raise ValueError(f"generalise needs a method: one of {', '.join(METHODS)}")
        if transform not in (None, "generalise") and method is not None:
            raise ValueError("only generalise takes a method; remove it or use transform: generalise")
        return method

    @field_validator("as_")
    @classmethod
    def _nothing_to_rename(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is not None and info.data.get("transform") == "drop":
            raise ValueError("a dropped field is not delivered, so it takes no `as`")
        return name

    @model_validator(mode="after")
    def _params_fit(self) -> FieldRule:
        # Each parameter belongs to one transform or method; a stray one is a likely typo, not a no-op.
        owners = {"at": ("age-band", self.at), "from": ("lsoa", self.from_), "keep_last": ("mask", self.keep_last)}
        for param, (owner, value) in owners.items():
            if value is not None and owner not in (self.method, self.transform):
                raise ValueError(f"`{param}` only applies to {owner}; remove it")
        return self


class TierSpec(_Model):
    """What the holders of `roles` receive: the named fields, plus the unnamed ones if other_fields is keep."""

    roles: Annotated[tuple[Id, ...], AfterValidator(_unique)] = Field(min_length=1)
    other_fields: OtherFields = "drop"
    fields: Mapping[FieldName, FieldRule] = Field(default_factory=dict, validate_default=True)

    @field_validator("fields")
    @classmethod
    def _delivers_something(cls, fields: Mapping[str, FieldRule], info: ValidationInfo) -> Mapping[str, FieldRule]:
        if info.data.get("other_fields", "drop") == "drop" and all(r.transform == "drop" for r in fields.values()):
            raise ValueError("this tier delivers nothing: name the fields it receives or set other_fields: keep")
        return fields


Tiers = Annotated[Mapping[Id, TierSpec], Field(min_length=1)]
LegalBases = Annotated[tuple[LegalBasis, ...], Field(min_length=1), AfterValidator(_unique)]


class Template(_Model):
    """A pre-agreed flow: stream, purpose, legal basis and tiers; an agreement adds parties and dates."""

    template: Id
    title: Text
    stream: StreamId
    purpose: Id
    legal_basis: LegalBases
    emergency_level_required: EmergencyLevel = "normal"
    row_scope: RowScope = SUBSCRIBER_AREAS
    tiers: Tiers

    @property
    def id(self) -> str:
        return self.template


class Signatory(_Model):
    body: Id
    name: Text
    role: Id


OVERRIDABLE: tuple[str, ...] = ("stream", "purpose", "legal_basis", "tiers", "row_scope", "emergency_level_required")


class Agreement(_Model):
    """A signed sharing agreement; without a template it states the flow itself, with one it may override keys."""

    agreement: Id
    template: Id | None = None
    subscriber: Id
    publisher: Id | None = None
    stream: StreamId | None = None
    purpose: Id | None = None
    legal_basis: LegalBases | None = None
    tiers: Tiers | None = None
    row_scope: RowScope | None = None
    emergency_level_required: EmergencyLevel | None = None
    valid_from: AwareDatetime
    valid_until: AwareDatetime
    review_date: dt.date
    signatories: tuple[Signatory, ...] = Field(min_length=1)

    @property
    def id(self) -> str:
        return self.agreement

    @field_validator("valid_until")
    @classmethod
    def _after_start(cls, until: dt.datetime, info: ValidationInfo) -> dt.datetime:
        start = info.data.get("valid_from")
        if start is not None and until <= start:
            raise ValueError(f"valid_until {until.isoformat()} is not after valid_from {start.isoformat()}; "
                             "an agreement must be in force for some time")
        return until

    @model_validator(mode="after")
    def _states_the_flow(self) -> Agreement:
        if self.template is None:
            missing = [k for k in ("stream", "purpose", "legal_basis", "tiers") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"an agreement without a template must state {', '.join(missing)}; "
                                 "add them or name a template")
        return self


class BodiesFile(_Model):
    bodies: tuple[Body, ...]


class StreamsFile(_Model):
    streams: tuple[Stream, ...]


class Catalog(_Model):
    """Every entry of one catalog directory by id, with where each was written (`origins["agreement:<id>"]`)."""

    bodies: Mapping[str, Body]
    streams: Mapping[str, Stream]
    templates: Mapping[str, Template]
    agreements: Mapping[str, Agreement]
    origins: Mapping[str, Origin]

    def origin(self, kind: str, ident: str) -> Origin:
        return self.origins.get(f"{kind}:{ident}") or Origin(file="catalog")
