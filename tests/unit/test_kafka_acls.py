"""The Kafka ACL bindings Accord keeps: worked out from the catalog, default deny, no body reaching another's and
no role of a body reaching another role's."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from broker.adapters.kafka_access import KafkaAccess
from broker.domain.kafka_acls import (
    SERVICE_USERS,
    Binding,
    BodyRoles,
    Op,
    Resource,
    all_bindings,
    bodies_from_catalog,
    publisher_bindings,
    publisher_user,
    service_bindings,
    subscriber_bindings,
    subscriber_user,
    users,
)
from broker.domain.topics import AUDIT_TOPIC, CHAIN_TOPIC, CONTROL_TOPIC, GOVERNANCE_TOPIC, STATUS_TOPIC, delivery_topic
from broker.errors import ConfigError

STREAMS = ["ukhsa.positive-tests", "nhsd.shielded-patients"]
BODIES: dict[str, dict[str, list[str]]] = {
    "ukhsa": {"roles": ["ig-lead"]}, "nhsd": {"roles": []},
    "leicester-city-council": {"roles": ["dph", "analyst", "ig-lead"]},
    "nottingham-city-council": {"roles": ["dph", "analyst"]},
}
LEICESTER_DPH = subscriber_user("leicester-city-council", "dph")
LEICESTER_ANALYST = subscriber_user("leicester-city-council", "analyst")


def _allowed(bindings: list[Binding], user: str, resource: Resource, name: str, op: Op) -> bool:
    """What the broker's authorizer would decide for one request, given only ALLOW bindings."""
    return any(b.user == user and b.resource == resource and b.op == op
               and (name.startswith(b.name) if b.prefixed else name == b.name) for b in bindings)


@pytest.fixture
def bindings() -> list[Binding]:
    return all_bindings(bodies_from_catalog(BODIES, STREAMS))


def test_a_publisher_writes_only_its_own_ingest_topics(bindings: list[Binding]) -> None:
    assert _allowed(bindings, "ukhsa", Resource.TOPIC, "ingest.ukhsa.positive-tests", Op.WRITE)
    assert not _allowed(bindings, "ukhsa", Resource.TOPIC, "ingest.nhsd.shielded-patients", Op.WRITE)
    assert not _allowed(bindings, "ukhsa", Resource.TOPIC, "ingest.ukhsa.positive-tests", Op.READ)
    assert _allowed(bindings, "ukhsa", Resource.TOPIC, "quarantine.ukhsa.positive-tests", Op.READ)
    assert not _allowed(bindings, "ukhsa", Resource.TOPIC, "quarantine.nhsd.shielded-patients", Op.READ)


def test_a_role_reads_only_its_own_delivery_topics_in_its_own_groups(bindings: list[Binding]) -> None:
    own = delivery_topic("leicester-city-council", "dph", "ukhsa.positive-tests")
    other = delivery_topic("nottingham-city-council", "dph", "ukhsa.positive-tests")
    assert LEICESTER_DPH == "leicester-city-council.dph"
    assert _allowed(bindings, LEICESTER_DPH, Resource.TOPIC, own, Op.READ)
    assert not _allowed(bindings, LEICESTER_DPH, Resource.TOPIC, other, Op.READ)
    assert not _allowed(bindings, LEICESTER_DPH, Resource.TOPIC, own, Op.WRITE)
    assert not _allowed(bindings, LEICESTER_DPH, Resource.TOPIC, "ingest.ukhsa.positive-tests", Op.WRITE)
    assert _allowed(bindings, LEICESTER_DPH, Resource.GROUP, "leicester-city-council.dph.dashboard", Op.READ)
    assert not _allowed(bindings, LEICESTER_DPH, Resource.GROUP, "nottingham-city-council.dph.x", Op.READ)


def test_a_bodys_analyst_never_reads_what_its_dph_receives(bindings: list[Binding]) -> None:
    # Issue 15, defect 2: with one login per body, Leicester's analysts read the DPH's NHS numbers and addresses.
    dph = delivery_topic("leicester-city-council", "dph", "ukhsa.positive-tests")
    analyst = delivery_topic("leicester-city-council", "analyst", "ukhsa.positive-tests")
    assert _allowed(bindings, LEICESTER_ANALYST, Resource.TOPIC, analyst, Op.READ)
    assert not _allowed(bindings, LEICESTER_ANALYST, Resource.TOPIC, dph, Op.READ)
    assert not _allowed(bindings, LEICESTER_ANALYST, Resource.TOPIC, dph, Op.DESCRIBE)
    assert not _allowed(bindings, LEICESTER_DPH, Resource.TOPIC, analyst, Op.READ)
    assert not _allowed(bindings, LEICESTER_ANALYST, Resource.GROUP, "leicester-city-council.dph.x", Op.READ)
    # and the body's own name is no login that reads deliveries (it publishes nothing, so it is no user at all)
    assert "leicester-city-council" not in users(bodies_from_catalog(BODIES, STREAMS))
    assert not any(b.user == "leicester-city-council" for b in bindings)


def test_every_role_a_body_holds_gets_a_login_and_only_those(bindings: list[Binding]) -> None:
    # A grant or a break-glass can deliver to any role the body holds, not only the ones its agreements name.
    logins = {u for u in users(bodies_from_catalog(BODIES, STREAMS)) if not u.startswith("accord.")}
    assert logins == {"ukhsa", "ukhsa.ig-lead", "nhsd", "leicester-city-council.dph",
                      "leicester-city-council.analyst", "leicester-city-council.ig-lead",
                      "nottingham-city-council.dph", "nottingham-city-council.analyst"}
    assert not any(b.user.startswith("nhsd.") for b in bindings)  # a body holding no role receives nothing


def test_a_role_whose_name_prefixes_another_gets_nothing_of_the_other() -> None:
    bindings = all_bindings([BodyRoles("leicester-city-council", False, ("dph", "dph-deputy"))])
    deputy = delivery_topic("leicester-city-council", "dph-deputy", "ukhsa.positive-tests")
    assert not _allowed(bindings, LEICESTER_DPH, Resource.TOPIC, deputy, Op.READ)
    assert not _allowed(bindings, LEICESTER_DPH, Resource.GROUP, "leicester-city-council.dph-deputy.x", Op.READ)


def test_a_publisher_has_no_group_that_reaches_into_its_roles_groups(bindings: list[Binding]) -> None:
    assert not _allowed(bindings, "ukhsa", Resource.GROUP, "ukhsa.ig-lead.x", Op.READ)
    assert not _allowed(bindings, "ukhsa", Resource.TOPIC, delivery_topic("ukhsa", "ig-lead", "s.t"), Op.READ)
    assert _allowed(bindings, "ukhsa.ig-lead", Resource.TOPIC, delivery_topic("ukhsa", "ig-lead", "s.t"), Op.READ)


def test_the_gate_reads_ingest_and_writes_deliveries_but_reads_no_delivery(bindings: list[Binding]) -> None:
    gate = SERVICE_USERS["gate"]
    assert _allowed(bindings, gate, Resource.TOPIC, "ingest.ukhsa.positive-tests", Op.READ)
    assert _allowed(bindings, gate, Resource.TOPIC, "deliver.leicester-city-council.dph.ukhsa.positive-tests", Op.WRITE)
    assert not _allowed(bindings, gate, Resource.TOPIC, "deliver.leicester-city-council.dph.x", Op.READ)
    assert not _allowed(bindings, gate, Resource.TOPIC, "ingest.ukhsa.positive-tests", Op.WRITE)
    assert not _allowed(bindings, gate, Resource.TOPIC, "_accord.governance", Op.WRITE)


def test_only_the_gate_writes_a_delivery_topic_and_only_the_pull_api_and_the_console_read_one() -> None:
    writers = {u for u in SERVICE_USERS.values() if _allowed(service_bindings(), u, Resource.TOPIC, "deliver.x.dph.s",
                                                              Op.WRITE)}
    readers = {u for u in SERVICE_USERS.values() if _allowed(service_bindings(), u, Resource.TOPIC, "deliver.x.dph.s",
                                                              Op.READ)}
    assert (writers, readers) == ({SERVICE_USERS["gate"]}, {SERVICE_USERS["api"], SERVICE_USERS["console"]})
    # The pull API needs the control topic to refuse an ended right, and never writes it.
    assert _allowed(service_bindings(), SERVICE_USERS["api"], Resource.TOPIC, "_accord.control", Op.READ)
    assert not _allowed(service_bindings(), SERVICE_USERS["api"], Resource.TOPIC, "_accord.control", Op.WRITE)


def test_the_api_reads_receipt_keys_on_the_governance_log_and_appends_receipts_to_the_audit_topic_only() -> None:
    api, bindings = SERVICE_USERS["api"], service_bindings()
    assert _allowed(bindings, api, Resource.TOPIC, "_accord.governance", Op.READ)
    assert not _allowed(bindings, api, Resource.TOPIC, "_accord.governance", Op.WRITE)
    assert _allowed(bindings, api, Resource.TOPIC, "_accord.audit", Op.WRITE)
    assert not _allowed(bindings, api, Resource.TOPIC, "_accord.audit", Op.READ)
    assert not _allowed(bindings, api, Resource.TOPIC, "_accord.audit.chain", Op.WRITE)


def test_the_console_reads_and_never_writes() -> None:
    console = [b for b in service_bindings() if b.user == SERVICE_USERS["console"]]
    assert {b.op for b in console} == {Op.READ, Op.DESCRIBE}
    # The quarantine: the Publisher page shows a signed-in publisher its own (OPA and the catalog's owner decide).
    for topic in ("_accord.governance", "_accord.audit.chain", "_accord.control", "deliver.x.dph.s",
                  "quarantine.ukhsa.positive-tests"):
        assert _allowed(service_bindings(), SERVICE_USERS["console"], Resource.TOPIC, topic, Op.READ)
    for topic in ("_accord.audit", "ingest.ukhsa.positive-tests"):
        assert not _allowed(service_bindings(), SERVICE_USERS["console"], Resource.TOPIC, topic, Op.READ)
    # The delivery lag: the gate group's offsets are described, never joined or committed.
    assert _allowed(service_bindings(), SERVICE_USERS["console"], Resource.GROUP, "accord-gate", Op.DESCRIBE)
    assert not _allowed(service_bindings(), SERVICE_USERS["console"], Resource.GROUP, "accord-gate", Op.READ)



@pytest.mark.parametrize("topic", [GOVERNANCE_TOPIC, AUDIT_TOPIC, CHAIN_TOPIC])
def test_no_user_may_delete_records_from_or_reconfigure_the_audit_chain_or_its_anchors(
        bindings: list[Binding], topic: str) -> None:
    # The anchors on the governance log prove a cut audit chain only while neither can be cut or compacted.
    for user in {b.user for b in bindings}:
        for op in (Op.DELETE, Op.ALTER_CONFIGS, Op.ALTER):
            assert not _allowed(bindings, user, Resource.TOPIC, topic, op), (user, op, topic)

def test_every_binding_is_an_allow_of_a_known_user(bindings: list[Binding]) -> None:
    known = set(users(bodies_from_catalog(BODIES, STREAMS)))
    assert {b.user for b in bindings} <= known
    assert all(b.name for b in bindings)
    assert len(bindings) == len(set(bindings))


@pytest.mark.parametrize(("body", "role"), [
    ("accord", "gate"),            # would be the gate's own user
    ("accord", "dph"),             # inside the services' name space
    ("", "dph"), ("leicester.city", "dph"), ("-x", "dph"),
    ("leicester-city-council", "dph.analyst"),   # would read `deliver.<body>.dph.` too
    ("leicester-city-council", ""), ("leicester-city-council", "a,b"), ("leicester-city-council", "a=b"),
])
def test_names_that_could_pass_for_another_user_are_refused(body: str, role: str) -> None:
    with pytest.raises(ValueError):
        subscriber_bindings(body, role)


def test_body_names_that_could_pass_for_a_service_are_refused() -> None:
    for body in ("accord", "accord.gate", ""):
        with pytest.raises(ValueError):
            publisher_user(body)
        with pytest.raises(ValueError):
            publisher_bindings(body)


def test_credentials_never_show_in_text() -> None:
    access = KafkaAccess.scram("127.0.0.1:9092", "ukhsa", "s3cret-pw")
    assert "s3cret-pw" not in repr(access) and "s3cret-pw" not in str(access)
    assert access.client_options()["sasl_plain_password"] == "s3cret-pw"
    assert access.librdkafka_options()["sasl.password"] == "s3cret-pw"
    assert access.principal == "User:ukhsa"


def test_a_sasl_access_needs_both_name_and_password() -> None:
    with pytest.raises(ConfigError, match="needs SASL credentials"):
        KafkaAccess("127.0.0.1:9092", "ukhsa", None, "SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="protocol"):
        KafkaAccess("127.0.0.1:9092", "ukhsa", SecretStr("x"), "SASL_WHATEVER")
    assert "sasl_mechanism" not in KafkaAccess("127.0.0.1:9092").client_options()


def test_only_the_fences_user_may_alter_bindings_and_it_reads_no_delivery() -> None:
    bindings = service_bindings()
    alter = {b.user for b in bindings if b.resource == Resource.CLUSTER and b.op == Op.ALTER}
    assert alter == {SERVICE_USERS["fences"]}
    assert not [b for b in bindings if b.user == SERVICE_USERS["fences"] and b.op == Op.READ]
    assert not _allowed(bindings, SERVICE_USERS["fences"], Resource.TOPIC, "_accord.audit.chain", Op.WRITE)


def test_only_the_governance_service_writes_the_audit_chain() -> None:
    bindings = service_bindings()
    writers = {user for user in SERVICE_USERS.values()
               if _allowed(bindings, user, Resource.TOPIC, CHAIN_TOPIC, Op.WRITE)}
    assert writers == {SERVICE_USERS["governance"]}
    assert _allowed(bindings, SERVICE_USERS["gate"], Resource.TOPIC, AUDIT_TOPIC, Op.WRITE)


def test_only_the_governance_service_which_signs_control_records_may_write_the_control_topic(
        bindings: list[Binding]) -> None:
    writers = {user for user in users(bodies_from_catalog(BODIES, STREAMS))
               if _allowed(bindings, user, Resource.TOPIC, CONTROL_TOPIC, Op.WRITE)}
    assert writers == {SERVICE_USERS["governance"]}
    assert _allowed(bindings, SERVICE_USERS["gate"], Resource.TOPIC, CONTROL_TOPIC, Op.READ)
    assert _allowed(bindings, SERVICE_USERS["gate"], Resource.TOPIC, STATUS_TOPIC, Op.WRITE)  # its own acks
