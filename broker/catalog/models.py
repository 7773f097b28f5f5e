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
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from broker.domain.backfill import parse_history
from broker.domain.drills import DRILL_BODY_PREFIX, is_drill_body
from broker.domain.geography import is_well_formed
from broker.domain.ladder import EmergencyLevel
from broker.domain.partitions import DEFAULT_DELIVERY_PARTITIONS, DEFAULT_INGEST_PARTITIONS, MAX_PARTITIONS
from broker.domain.topics import ingest_topic, value_subject

Kind = Literal["national", "local", "responder", "processor"]
BodyTier = Literal["national", "county", "unitary", "ltla-only", "responder", "processor"]
# A topic's partition count: a whole number (not "12", not 12.0, not true), at least one, at most MAX_PARTITIONS.
Partitions = Annotated[StrictInt, Field(ge=1, le=MAX_PARTITIONS)]
Classification = Literal["open", "official", "official-sensitive", "commercially-sensitive", "special-category"]
LegalBasis = Literal[
    "copi-reg-3-4", "uk-gdpr-6-1-e", "uk-gdpr-9-2-h", "uk-gdpr-9-2-i", "dpa-2018-sch1-para3",
    "cca-2004", "dea-2017-part5", "public-health-directions-2020", "data-provision-notice", "not-personal-data",
    # Section 251 support (COPI regulations 2 and 5, via the Confidentiality Advisory Group): research and planning,
    # the uses the National Data Opt-out covers; and individual (direct) care, which it does not (domain/optout.py).
    "copi-reg-5-s251", "individual-care",
]
Transform = Literal["keep", "drop", "mask", "pseudonymise", "generalise"]
Method = Literal["age-band", "postcode-district", "lsoa"]
OtherFields = Literal["drop", "keep"]
Outcome = Literal["refusal-stands", "provisional-grant"]

SUBSCRIBER_AREAS = "subscriber-areas"
METHODS: tuple[str, ...] = ("age-band", "postcode-district", "lsoa")
_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
_STREAM_ID = re.compile(r"[a-z0-9][a-z0-9-]*\.[a-z0-9][a-z0-9-]*")
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Weeks, days, hours, minutes, whole seconds: a month or a year has no fixed length, so no deadline is written in one.
_DURATION = re.compile(r"P(?=.*[0-9])(?:[0-9]+W)?(?:[0-9]+D)?(?:T(?=[0-9])(?:[0-9]+H)?(?:[0-9]+M)?(?:[0-9]+S)?)?")
_LOCAL_TIERS = ("county", "unitary", "ltla-only")


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


def _duration(value: object) -> object:
    # Checked before pydantic parses it, which would also take a bare number of seconds or P1M as 30 days.
    if not (isinstance(value, str) and _DURATION.fullmatch(value)):
        raise ValueError(f"{value!r} is not an ISO 8601 duration in weeks, days, hours, minutes or seconds; "
                         "write e.g. P5D, PT24H or PT30M (no years or months, whose length varies)")
    return value


def _positive(value: dt.timedelta) -> dt.timedelta:
    if value <= dt.timedelta(0):
        raise ValueError("must be longer than zero; write e.g. PT1H")
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


def _retention(span: dt.timedelta) -> dt.timedelta:
    if span < dt.timedelta(hours=1):
        raise ValueError(f"a retention of {span} is too short to read what was delivered; give an ISO 8601 "
                         "duration of at least an hour, e.g. P28D")
    return span


def _history(value: object) -> str:
    return parse_history(value).text


# History on a new grant: an ISO 8601 duration before the agreement comes into force (P28D) or a date.
History = Annotated[str, BeforeValidator(_history)]
RowScope = Annotated[str | tuple[str, ...], PlainValidator(_row_scope)]
Duration = Annotated[dt.timedelta, BeforeValidator(_duration), AfterValidator(_positive)]
# How long a delivery topic keeps what it was sent: an ISO 8601 duration of at least an hour, e.g. P28D.
Retention = Annotated[dt.timedelta, BeforeValidator(_duration), AfterValidator(_retention)]
Roles = Annotated[tuple[Id, ...], Field(min_length=1), AfterValidator(_unique)]


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


class Approval(_Model):
    """Who approves an access request made from a template: `approvals` distinct people of the publisher holding
    `roles` (N of M), with at least one holder of each role in `one_of_each` among them."""

    approvals: int = Field(default=1, ge=1)
    roles: Roles = ("ig-lead",)
    one_of_each: Annotated[tuple[Id, ...], AfterValidator(_unique)] = ()

    @model_validator(mode="after")
    def _reachable(self) -> Approval:
        stray = [role for role in self.one_of_each if role not in self.roles]
        if stray:
            raise ValueError(f"one_of_each names {', '.join(stray)}, not among roles ({', '.join(self.roles)}); "
                             "add it to roles or remove it")
        if len(self.one_of_each) > self.approvals:
            raise ValueError(f"{len(self.one_of_each)} roles must each approve but approvals is {self.approvals}; "
                             "raise approvals")
        return self


class Body(_Model):
    """A body that publishes, subscribes or takes part in disputes; all but a national one cover LA codes.

    A council is `local`; a `responder` (a police force) or a `processor` (a voluntary-sector food bank network)
    covers areas that need not be one council's, so its areas may be of any tier.
    """

    id: Id
    name: Text
    kind: Kind
    tier: BodyTier
    areas: Annotated[tuple[LaCode, ...], AfterValidator(_unique)] = Field(default=(), validate_default=True)
    roles: Annotated[tuple[Id, ...], AfterValidator(_unique)] = ()
    # A publisher's rule for approving access requests to its streams; a template's own `approval` overrides it.
    approval: Approval | None = None

    @field_validator("id")
    @classmethod
    def _not_a_drill_body(cls, ident: str) -> str:
        if is_drill_body(ident):
            raise ValueError(f"ids starting {DRILL_BODY_PREFIX!r} are kept for the bodies `accord drill` adds for "
                             "a run; choose another id")
        return ident

    @field_validator("tier")
    @classmethod
    def _tier_fits_kind(cls, tier: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if kind == "local" and tier not in _LOCAL_TIERS:
            raise ValueError("a local body's tier is county, unitary or ltla-only, as in the LA table")
        if kind not in (None, "local") and tier != kind:
            raise ValueError(f"a {kind} body has tier {kind}, not {tier!r}")
        return tier

    @field_validator("areas")
    @classmethod
    def _areas_fit_kind(cls, areas: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        kind = info.data.get("kind")
        if kind == "national" and areas:
            raise ValueError("a national body covers every area; remove areas (or make the body local)")
        if kind not in (None, "national") and not areas:
            raise ValueError(f"a {kind} body needs at least one LA code in areas")
        return areas


class Stream(_Model):
    """A published stream; its schema is the Avro file `schema:` names (relative to the catalog directory), else
    the one whose `accord.stream` is its id in the catalog's own schemas/ folder or among the shipped templates."""

    id: StreamId
    owner: Id
    subject: Text | None = None
    schema_file: Text | None = Field(default=None, alias="schema")
    classification: Classification
    jurisdiction: Annotated[tuple[FieldName, ...], AfterValidator(_unique)] | None = None
    # ingest.<id>: gate workers share its partitions (domain/partitions.py)
    partitions: Partitions = DEFAULT_INGEST_PARTITIONS
    # each deliver.<subscriber>.<role>.<id>: a subscriber's own consumers share its partitions
    delivery_partitions: Partitions = DEFAULT_DELIVERY_PARTITIONS

    @property
    def ingest_subject(self) -> str:
        return self.subject or value_subject(ingest_topic(self.id))


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
    minimised_tier: Id | None = None
    # How long a subscriber's delivery topic keeps what it was sent (ISO 8601, e.g. P28D); None: Kafka's default.
    retention: Retention | None = None
    # Who approves an access request made from this template (default: the publisher's rule, else one IG lead).
    approval: Approval | None = None

    @property
    def id(self) -> str:
        return self.template

    @field_validator("minimised_tier")
    @classmethod
    def _names_a_tier(cls, tier: str | None, info: ValidationInfo) -> str | None:
        tiers = info.data.get("tiers")
        if tier is not None and tiers is not None and tier not in tiers:
            raise ValueError(f"{tier!r} is not a tier of this template ({', '.join(tiers)}); name the tier that "
                             "delivers least, or remove minimised_tier")
        return tier


class Suppression(_Model):
    """Small-number suppression of an aggregate stream's cells for this agreement (broker/domain/suppression.py):
    counts under `threshold` hidden, the rest rounded to `round_to`, cells laid out `rows` by `columns`."""

    threshold: int = Field(ge=1)
    round_to: int = Field(default=1, ge=1)
    rows: FieldName
    columns: FieldName
    counts: Annotated[tuple[FieldName, ...], AfterValidator(_unique)] | None = None  # default: tagged small-count
    denominator: FieldName | None = None


class Signatory(_Model):
    body: Id
    name: Text
    role: Id


OVERRIDABLE: tuple[str, ...] = ("stream", "purpose", "legal_basis", "tiers", "row_scope", "emergency_level_required",
                                 "retention")


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
    retention: Retention | None = None
    # The day the legal basis lapses (a COPI notice's expiry): the agreement ends then, whatever valid_until says.
    legal_basis_until: dt.date | None = None
    # The subscriber's quality rule: rows missing one of these are quarantined for it, not delivered.
    required_fields: Annotated[tuple[FieldName, ...], AfterValidator(_unique)] = ()
    # Aggregate streams: small counts suppressed for this agreement's subscriber (e.g. T6's publication channel).
    suppression: Suppression | None = None
    # History replayed to the subscriber when the agreement comes into force (domain/backfill.py).
    backfill: History | None = None
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


def _span(value: dt.timedelta) -> str:
    """A duration as a reader would say it ("48 hours"), for messages comparing two of them."""
    seconds = int(value.total_seconds())
    unit, size = next((unit, size) for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
                      if seconds % size == 0)
    return f"{seconds // size} {unit}{'s' * (seconds != size)}"


class Levels(_Model):
    """One duration per emergency level; all three are required so no level falls back on a guess."""

    normal: Duration
    enhanced: Duration
    emergency: Duration


class Deadlines(Levels):
    """A tier's deadlines: a declared emergency shortens the time to decide, never lengthens it."""

    @field_validator("enhanced", "emergency")
    @classmethod
    def _not_longer(cls, value: dt.timedelta, info: ValidationInfo) -> dt.timedelta:
        lower = "normal" if info.field_name == "enhanced" else "enhanced"
        before = info.data.get(lower)
        if before is not None and value > before:
            raise ValueError(f"{_span(value)} is longer than the {lower} deadline ({_span(before)}); a higher "
                             "level may only shorten a deadline, so make it at most that")
        return value


class Deciders(_Model):
    """Who decides at a tier: the disputed stream's publisher, or named bodies; in either case, holders of `roles`."""

    party: Literal["publisher"] | None = None
    bodies: Annotated[tuple[Id, ...], Field(min_length=1), AfterValidator(_unique)] | None = None
    roles: Roles

    @model_validator(mode="after")
    def _one_kind(self) -> Deciders:
        if (self.party is None) == (self.bodies is None):
            raise ValueError("give exactly one of `party: publisher` (the disputed stream's owner decides) or "
                             "`bodies: [<body ids>]`")
        return self


class LadderTier(_Model):
    """One rung of the ladder: `approvals` of the deciders must agree before its deadline at the current level."""

    name: Id
    title: Text
    deciders: Deciders
    approvals: int = Field(ge=1)
    deadlines: Deadlines

    @field_validator("approvals")
    @classmethod
    def _reachable(cls, approvals: int, info: ValidationInfo) -> int:
        deciders = info.data.get("deciders")
        named = deciders.bodies if isinstance(deciders, Deciders) else None
        if named is not None and approvals > len(named):
            raise ValueError(f"{approvals} approvals can never be reached: {len(named)} "
                             f"bod{'ies' if len(named) != 1 else 'y'} decide; lower approvals or name more bodies")
        return approvals


class DecisiveDefault(_Model):
    """What stands when the last tier's deadline passes undecided: the refusal, or a grant for `period`."""

    outcome: Outcome
    period: Duration | None = Field(default=None, validate_default=True)

    @field_validator("period")
    @classmethod
    def _period_fits(cls, period: dt.timedelta | None, info: ValidationInfo) -> dt.timedelta | None:
        outcome = info.data.get("outcome")
        if outcome == "provisional-grant" and period is None:
            raise ValueError("a provisional-grant needs a period, how long it lasts undecided; add e.g. period: P14D")
        if outcome == "refusal-stands" and period is not None:
            raise ValueError("refusal-stands grants nothing, so it takes no period; remove it")
        return period


class DecisiveDefaults(_Model):
    normal: DecisiveDefault
    enhanced: DecisiveDefault
    emergency: DecisiveDefault


class BreakGlass(_Model):
    """At `levels`, holders of `roles` may take data at once for `period`, to be disputed afterwards."""

    levels: Annotated[tuple[EmergencyLevel, ...], Field(min_length=1), AfterValidator(_unique)]
    roles: Roles
    period: Duration


class Ladder(_Model):
    tiers: tuple[LadderTier, ...] = Field(min_length=1)
    decisive_default: DecisiveDefaults
    grant_period: Duration
    appeal_window: Levels
    break_glass: BreakGlass
    deletion_deadline: Deadlines


class Declarer(_Model):
    body: Id
    roles: Roles


class EmergencyRules(_Model):
    declarers: tuple[Declarer, ...] = Field(min_length=1)


class LadderFile(_Model):
    """ladder.yaml: how a dispute escalates and who may declare or lift an emergency level."""

    ladder: Ladder
    emergency: EmergencyRules


LADDER = "ladder:ladder.yaml"  # the key of ladder.yaml's origin in Catalog.origins


class Catalog(_Model):
    """Every entry of one catalog directory by id, with where each was written (`origins["agreement:<id>"]`).

    `ladder` is None only when ladder.yaml is missing or invalid, which loading reports as a problem.
    """

    bodies: Mapping[str, Body]
    streams: Mapping[str, Stream]
    templates: Mapping[str, Template]
    agreements: Mapping[str, Agreement]
    ladder: LadderFile | None = None
    origins: Mapping[str, Origin]

    def origin(self, kind: str, ident: str) -> Origin:
        return self.origins.get(f"{kind}:{ident}") or Origin(file="catalog")
