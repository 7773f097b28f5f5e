"""Every Kafka topic name Accord uses, and the prefixes its ACLs are written against: the one place they are spelled.

Data topics are per stream (`<body>.<name>`): a publisher writes `ingest.<stream>`, the rows a check refuses go to
`quarantine.<stream>`, and each subscriber's role reads `deliver.<subscriber>.<role>.<stream>`. Accord's own topics
start with `_accord.`.
"""

from __future__ import annotations

from broker.errors import ConfigError

INGEST_PREFIX = "ingest."
QUARANTINE_PREFIX = "quarantine."
DELIVER_PREFIX = "deliver."
INTERNAL_PREFIX = "_accord."

CONTROL_TOPIC = f"{INTERNAL_PREFIX}control"          # catalog applies, revocations, grants, the emergency level
STATUS_TOPIC = f"{INTERNAL_PREFIX}gate-status"       # gate workers' acknowledgements of policy revisions
GOVERNANCE_TOPIC = f"{INTERNAL_PREFIX}governance"    # disputes, approvals, declarations: the source of truth
AUDIT_TOPIC = f"{INTERNAL_PREFIX}audit"              # every decision, batch and governance event, unchained
SCHEMAS_TOPIC = f"{INTERNAL_PREFIX}schemas"          # the schema registry's compacted changelog
OPTOUT_TOPIC = f"{INTERNAL_PREFIX}optout"            # National Data Opt-out: keyed hashes of NHS numbers, compacted
BACKFILL_TOPIC = f"{INTERNAL_PREFIX}backfill"        # history on a new grant: boundaries and progress, compacted
INGEST_REQUESTS_TOPIC = f"{INTERNAL_PREFIX}ingest-requests"  # idempotency keys of publish requests and their answers
CHAIN_SUFFIX = ".chain"


def ingest_topic(stream: str) -> str:
    """Where a stream's records arrive (from the API, a connector or a publisher's own Kafka client)."""
    return f"{INGEST_PREFIX}{stream}"


def quarantine_topic(stream: str) -> str:
    """Where a stream's refused records wait, with their reasons, for the publisher to see."""
    return f"{QUARANTINE_PREFIX}{stream}"


def delivery_topic(subscriber: str, role: str, stream: str) -> str:
    """The topic a subscriber's role reads a stream from."""
    return f"{DELIVER_PREFIX}{subscriber}.{role}.{stream}"


def delivered_stream(topic: str) -> str | None:
    """The stream a delivery topic carries; None for any other topic (body and role ids hold no dot)."""
    if not topic.startswith(DELIVER_PREFIX):
        return None
    parts = topic[len(DELIVER_PREFIX):].split(".", 2)
    return parts[2] if len(parts) == 3 and all(parts) else None


def value_subject(topic: str) -> str:
    """The registry subject of a topic's values (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


def chain_topic_of(audit_topic: str = AUDIT_TOPIC) -> str:
    """The signed hash chain kept over an audit topic."""
    return f"{audit_topic}{CHAIN_SUFFIX}"


def audit_topic_of(chain_topic: str) -> str:
    """The audit topic a chain topic is kept over (where an export asks the chainer to sign)."""
    if not chain_topic.endswith(CHAIN_SUFFIX) or chain_topic == CHAIN_SUFFIX:
        raise ConfigError(f"{chain_topic} is not a chain topic (`<audit topic>{CHAIN_SUFFIX}`), so there is no "
                          "audit topic to ask for a signed export on")
    return chain_topic.removesuffix(CHAIN_SUFFIX)


CHAIN_TOPIC = chain_topic_of(AUDIT_TOPIC)


def publisher_ingest_prefix(body: str) -> str:
    """The ingest topics a publishing body may write: its streams are `<body>.<name>`."""
    return f"{INGEST_PREFIX}{body}."


def publisher_quarantine_prefix(body: str) -> str:
    return f"{QUARANTINE_PREFIX}{body}."


def role_delivery_prefix(subscriber: str, role: str) -> str:
    """The delivery topics one role of a subscribing body reads: every stream delivered to that role, no other's."""
    return f"{DELIVER_PREFIX}{subscriber}.{role}."
