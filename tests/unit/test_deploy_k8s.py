"""deploy/k8s validates offline against the Kubernetes schemas (kubernetes-validate ships them), Strimzi's and KEDA's
(deploy/schemas), and `accord deploy render k8s` renders exactly the users, ACLs and topics Accord keeps."""

from __future__ import annotations

import copy
import functools
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from broker.catalog import load_and_compile
from broker.cli.deploy import as_yaml, internal_topics, render_k8s
from broker.config import Settings
from broker.domain.kafka_acls import (
    CLUSTER_NAME,
    Binding,
    Op,
    Resource,
    all_bindings,
    bodies_from_catalog,
    users,
)
from broker.domain.partitions import partitions_of
from broker.domain.strimzi import resource_name
from broker.domain.topics import ingest_topic, quarantine_topic

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = ROOT / "deploy" / "schemas"
KUBERNETES = "1.33.0"
STATIC = ("kafka.yaml", "accord.yaml", "networkpolicies.yaml", "keda.yaml")
GENERATED = ("generated/topics.yaml", "generated/users.yaml")
# Each custom resource group's CRD schemas as its operator's release ships them (deploy/schemas/README.md).
CRD_SCHEMAS = {"kafka.strimzi.io": "strimzi-1.2.0-crds.json", "keda.sh": "keda-2.20.2-crds.json"}
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _documents(*names: str) -> list[dict[str, Any]]:
    return [doc for name in names for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def _compiled() -> dict[str, Any]:
    settings = Settings()
    return load_and_compile(settings.catalog_dir, settings.schemas_dir)


@functools.cache
def _crds(file: str) -> dict[str, Any]:
    crds: dict[str, Any] = json.loads((SCHEMAS / file).read_text())
    return crds


def _unknown_fields(value: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    """The fields of `value` that `schema` does not declare: those the API server prunes (drops without a word) from
    a custom resource. A structural schema declares every field in `properties` (oneOf/anyOf only constrain them);
    `additionalProperties` gives the schema of undeclared keys, x-kubernetes-preserve-unknown-fields keeps them."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unknown_fields(item, schema.get("items", {}), f"{path}/{index}")
        return
    if not isinstance(value, dict) or schema.get("x-kubernetes-int-or-string"):
        return
    declared = schema.get("properties", {})
    extra = schema.get("additionalProperties", False)
    for key, item in value.items():
        if key in declared:
            yield from _unknown_fields(item, declared[key], f"{path}/{key}")
        elif isinstance(extra, dict):
            yield from _unknown_fields(item, extra, f"{path}/{key}")
        elif not (extra is True or schema.get("x-kubernetes-preserve-unknown-fields")):
            yield f"{path}/{key}".lstrip("/")


def _is_tls(o: dict[str, Any]) -> bool:
    return bool(o["type"] == "tls")


# The CEL rules (x-kubernetes-validations) of the kinds' schemas, translated by hand, keyed by kind, schema path
# and the rule's own text: a release that adds or changes one fails test_every_cel_rule_has_its_translation. As in
# CEL, reading a field that is not there fails the rule (KeyError below); `has()` is `in`.
_CEL: dict[tuple[str, str, str], Callable[[dict[str, Any]], bool]] = {
    ("Kafka", "spec/kafka/rack", '(has(self.type) && self.type != "topology-label") || self.topologyKey != ""'):
        lambda o: ("type" in o and o["type"] != "topology-label") or o["topologyKey"] != "",
    ("Kafka", "spec/kafka/rack",
     'has(self.type) == false || self.type != "environment-variable" || self.envVarName != ""'):
        lambda o: "type" not in o or o["type"] != "environment-variable" or o["envVarName"] != "",
    ("Kafka", "spec/kafka/metricsConfig", "self.type != 'jmxPrometheusExporter' || has(self.valueFrom)"):
        lambda o: o["type"] != "jmxPrometheusExporter" or "valueFrom" in o,
    ("Kafka", "spec/cruiseControl/metricsConfig", "self.type != 'jmxPrometheusExporter' || has(self.valueFrom)"):
        lambda o: o["type"] != "jmxPrometheusExporter" or "valueFrom" in o,
    ("Kafka", "spec/cruiseControl/metricsConfig", "self.type != 'strimziMetricsReporter'"):
        lambda o: o["type"] != "strimziMetricsReporter",
    ("KafkaUser", "spec/authentication",
     "self.type == 'tls' || (!has(self.validityDays) && !has(self.renewalDays))"):
        lambda o: _is_tls(o) or ("validityDays" not in o and "renewalDays" not in o),
    ("KafkaUser", "spec/authentication", "self.type != 'tls' || (has(self.renewalDays) == has(self.validityDays))"):
        lambda o: not _is_tls(o) or ("renewalDays" in o) == ("validityDays" in o),
    ("KafkaUser", "spec/authentication", "self.type != 'tls' || !has(self.renewalDays) || !has(self.validityDays) "
                                         "|| self.renewalDays < self.validityDays"):
        lambda o: not _is_tls(o) or "renewalDays" not in o or "validityDays" not in o or bool(
            o["renewalDays"] < o["validityDays"]),
    ("ScaledObject", "spec", "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) ? "
                             "self.maxReplicaCount : 100)"):
        lambda o: "minReplicaCount" not in o or bool(o["minReplicaCount"] <= o.get("maxReplicaCount", 100)),
}


def _cel_rules(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every CEL rule a schema carries, with the schema path of the object it applies to ([] an item, * a value)."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for key, sub in schema.get("properties", {}).items():
        yield from _cel_rules(sub, f"{path}/{key}".lstrip("/"))
    if isinstance(schema.get("items"), dict):
        yield from _cel_rules(schema["items"], f"{path}/[]".lstrip("/"))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _cel_rules(schema["additionalProperties"], f"{path}/*".lstrip("/"))


def _children(node: Any, step: str) -> list[tuple[str | int, Any]]:
    if isinstance(node, list):
        return list(enumerate(node)) if step == "[]" else []
    if isinstance(node, dict):
        return list(node.items()) if step == "*" else [(step, node[step])] if step in node else []
    return []


def _at(value: Any, path: str) -> list[tuple[str, Any]]:
    """The values at a schema path of `_cel_rules` in a document, with their own paths."""
    found: list[tuple[str, Any]] = [("", value)]
    for step in path.split("/") if path else []:
        found = [(f"{where}/{key}".lstrip("/"), item) for where, node in found for key, item in _children(node, step)]
    return found


def _cel_errors(doc: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    for path, rule in _cel_rules(schema):
        for where, value in _at(doc, path):
            translated = _CEL.get((doc["kind"], path, rule["rule"]))
            if translated is None:
                yield f"{where}: the rule {rule['rule']!r} has no translation in this test"
                continue
            try:
                holds = translated(value)
            except KeyError:
                holds = False
            if not holds:
                yield f"{where}: {rule.get('message', rule['rule'])}"


def _metadata_errors(metadata: dict[str, Any]) -> list[str]:
    """The API server checks a custom resource's metadata as any object's (ObjectMeta), its name a DNS subdomain."""
    problems = [] if _DNS_SUBDOMAIN.fullmatch(name := str(metadata.get("name", ""))) and len(name) <= 253 else [
        f"metadata/name: {name!r} is not a DNS subdomain"]
    try:
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}, KUBERNETES,
                                     strict=True)
    except kubernetes_validate.ValidationError as exc:
        problems.append(f"{'/'.join(map(str, exc.absolute_path))}: {exc.message}")
    return problems


def _crd_errors(doc: dict[str, Any], file: str) -> list[str]:
    crds = _crds(file)
    served = f"{crds['group']}/{crds['version']}"
    if doc["apiVersion"] != served:
        return [f"apiVersion: {doc['apiVersion']} is not served by {file} ({served} is)"]
    if doc["kind"] not in crds["kinds"]:
        return [f"kind: {doc['kind']} has no schema in {file}"]
    schema = crds["kinds"][doc["kind"]]["openAPIV3Schema"]
    # A CRD's openAPIV3Schema is an OpenAPI 3.0 schema object: JSON Schema draft 4's keywords, plus the
    # x-kubernetes-* extensions handled above (x-kubernetes-validations' CEL rules by their translations).
    validator = jsonschema.Draft4Validator(schema)
    return [*(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)),
            *(f"{path}: field not declared by the {doc['kind']} schema" for path in _unknown_fields(
                {k: v for k, v in doc.items() if k != "metadata"}, schema, "")),
            *_cel_errors(doc, schema),
            *_metadata_errors(doc.get("metadata", {}))]


def _errors(doc: dict[str, Any]) -> list[str]:
    group = doc["apiVersion"].split("/")[0]
    if group in CRD_SCHEMAS:
        return _crd_errors(doc, CRD_SCHEMAS[group])
    try:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc)]
    return []


@pytest.mark.parametrize("name", [*STATIC, *GENERATED])
def test_every_manifest_validates_against_its_schema(name: str) -> None:
    documents = _documents(name)
    assert documents
    problems = {f"{doc['kind']}/{doc['metadata']['name']}": _errors(doc) for doc in documents}
    assert {key: found for key, found in problems.items() if found} == {}


def _broken(name: str, kind: str, change: Callable[[dict[str, Any]], object]) -> list[str]:
    """The errors of the first `kind` in deploy/k8s/`name` after `change`; the unchanged document has none."""
    doc = copy.deepcopy(next(d for d in _documents(name) if d["kind"] == kind))
    assert _errors(doc) == []
    change(doc)
    return _errors(doc)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
    return change


@pytest.mark.parametrize(("name", "kind", "path", "value", "reported"), [
    # misspelt or misplaced fields: the real CRD schemas leave most objects open, so our own walk finds these
    ("accord.yaml", "Deployment", "spec/template/spec/containers/0/livenesProbe", {}, "livenesProbe"),
    ("kafka.yaml", "Kafka", "spec/kafka/listeners/0/tsl", False, "spec/kafka/listeners/0/tsl: field not declared"),
    ("kafka.yaml", "Kafka", "spec/kafka/superUsers", ["accord.admin"], "spec/kafka/superUsers: field not declared"),
    ("kafka.yaml", "KafkaNodePool", "spec/storage/volumes/0/sise", "20Gi", "spec/storage/volumes/0/sise: field"),
    ("keda.yaml", "ScaledObject", "spec/maxReplicas", 4, "spec/maxReplicas: field not declared"),
    ("keda.yaml", "TriggerAuthentication", "spec/secretTargetRef/0/secret", "x", "spec/secretTargetRef/0/secret:"),
    ("generated/topics.yaml", "KafkaTopic", "spec/partition", 3, "spec/partition: field not declared"),
    ("generated/users.yaml", "KafkaUser", "spec/authorization/acls/0/resource/pattern", "prefix",
     "spec/authorization/acls/0/resource/pattern: field not declared"),
    ("generated/users.yaml", "KafkaUser", "metadata/label", {}, "'label' was unexpected"),
    # values the schemas' own types and enums refuse
    ("generated/users.yaml", "KafkaUser", "spec/authorization/acls/0/operations", ["Reed"], "'Reed' is not one of"),
    ("kafka.yaml", "KafkaNodePool", "spec/roles", ["zookeeper"], "spec/roles/0: 'zookeeper' is not one of"),
    ("kafka.yaml", "Kafka", "spec/kafka/listeners/0/type", "internl", "spec/kafka/listeners/0/type: 'internl'"),
    ("generated/topics.yaml", "KafkaTopic", "spec/partitions", "12", "spec/partitions: '12' is not of type"),
    ("keda.yaml", "ScaledObject", "spec/triggers/0/metadata/lagThreshold", 1000, "lagThreshold: 1000 is not of"),
    ("keda.yaml", "ScaledObject", "spec/triggers/0/metadata", None, "spec/triggers/0/metadata: None is not of"),
    # the schemas' CEL rules
    ("keda.yaml", "ScaledObject", "spec/minReplicaCount", 13, "spec: minReplicaCount must be less than or equal"),
    ("generated/users.yaml", "KafkaUser", "spec/authentication/validityDays", 30,
     "spec/authentication: 'validityDays' and 'renewalDays' can be configured only with 'type: tls'"),
    ("kafka.yaml", "Kafka", "spec/kafka/rack", {"type": "topology-label"}, "spec/kafka/rack: topologyKey property"),
    # an API version the release does not serve, a name Kubernetes cannot hold
    ("generated/topics.yaml", "KafkaTopic", "apiVersion", "kafka.strimzi.io/v1beta2", "v1beta2 is not served"),
    ("keda.yaml", "ScaledObject", "apiVersion", "keda.sh/v1", "keda.sh/v1 is not served"),
    ("generated/topics.yaml", "KafkaTopic", "metadata/name", "_accord.audit", "is not a DNS subdomain"),
])
def test_the_schemas_catch_a_misspelt_or_misplaced_field(name: str, kind: str, path: str, value: Any,
                                                         reported: str) -> None:
    errors = _broken(name, kind, _set(path, value))
    assert any(reported in error for error in errors), errors


def test_fields_a_schema_leaves_open_are_not_refused() -> None:
    """Kafka's and a topic's `config`, labels: the schemas keep unknown keys there, so must the walk."""
    assert _broken("kafka.yaml", "Kafka", _set("spec/kafka/config/log.cleaner.threads", 2)) == []
    assert _broken("generated/topics.yaml", "KafkaTopic", _set("spec/config/segment.ms", "3600000")) == []
    assert _broken("kafka.yaml", "KafkaNodePool", _set("metadata/labels/team", "accord")) == []


def test_every_cel_rule_has_its_translation() -> None:
    """Every CEL rule of the kinds the manifests use is translated in _CEL, and every translation is of a rule the
    schemas still carry; the translations hold for a document that meets the rules and fail one that does not."""
    rules = {(kind, path, rule["rule"]) for file in CRD_SCHEMAS.values() for kind, crd in _crds(file)["kinds"].items()
             for path, rule in _cel_rules(crd["openAPIV3Schema"])}
    used = {d["kind"] for d in _documents(*STATIC, *GENERATED)}
    assert {rule for rule in rules if rule[0] in used} <= set(_CEL) <= rules
    tls = next(rule for key, rule in _CEL.items() if "self.renewalDays < self.validityDays" in key[2])
    assert tls({"type": "tls", "renewalDays": 30, "validityDays": 365})
    assert not tls({"type": "tls", "renewalDays": 365, "validityDays": 30})
    assert tls({"type": "scram-sha-512", "renewalDays": 365, "validityDays": 30})


def test_the_crd_schemas_are_whole_releases_with_their_source_named() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    used = {(d["apiVersion"].split("/")[0], d["kind"]) for d in _documents(*STATIC, *GENERATED)}
    for group, file in CRD_SCHEMAS.items():
        crds = _crds(file)
        assert crds["group"] == group
        assert {kind for g, kind in used if g == group} <= set(crds["kinds"])
        assert f"`{file}`" in readme and crds["source"]["tag"] in readme
        for kind in crds["kinds"].values():
            assert kind["file"] in readme
            # the release's schema, not a subset: it describes status too, and spec is not closed by us
            assert {"apiVersion", "kind", "metadata", "spec", "status"} <= set(kind["openAPIV3Schema"]["properties"])


def test_the_committed_resources_are_those_the_shipped_catalog_renders() -> None:
    rendered = render_k8s(_compiled())
    for name, resources in rendered.items():
        assert (K8S / "generated" / name).read_text() == as_yaml(resources), (
            f"deploy/k8s/generated/{name} is stale: run `accord deploy render k8s --out deploy/k8s/generated`")


_OPS = {op.value.replace("-", ""): op for op in Op}
_KINDS = {"topic": Resource.TOPIC, "group": Resource.GROUP, "transactionalId": Resource.TRANSACTIONAL_ID,
          "cluster": Resource.CLUSTER}


def _bindings(resources: list[dict[str, Any]]) -> set[Binding]:
    """The Kafka ACL bindings a list of KafkaUser resources grants, read back from the manifests."""
    found = set()
    for user in resources:
        for acl in user["spec"]["authorization"]["acls"]:
            assert acl["type"] == "allow"
            resource = acl["resource"]
            name = resource.get("name", CLUSTER_NAME)
            for op in acl["operations"]:
                found.add(Binding(user["metadata"]["name"], _KINDS[resource["type"]], name, _OPS[op.lower()],
                                  resource.get("patternType") == "prefix"))
    return found


def test_users_carry_exactly_the_acls_accord_keeps() -> None:
    document = _compiled()
    parties = bodies_from_catalog(document["bodies"], document["streams"])
    rendered = render_k8s(document)["users.yaml"]
    assert sorted(user["metadata"]["name"] for user in rendered) == users(parties)
    assert all(user["spec"]["authentication"] == {"type": "scram-sha-512"} for user in rendered)
    assert _bindings(rendered) == set(all_bindings(parties))


def test_topics_cover_accords_own_and_each_streams_ingest_and_quarantine() -> None:
    document = _compiled()
    topics = {t["spec"]["topicName"]: t for t in render_k8s(document, replicas=3)["topics.yaml"]}
    streams = sorted(document["streams"])
    assert set(topics) == set(internal_topics()) | {ingest_topic(s) for s in streams} | {
        quarantine_topic(s) for s in streams}
    assert {s: topics[ingest_topic(s)]["spec"]["partitions"] for s in streams} == {
        s: partitions_of(document, s).ingest for s in streams}
    assert {topics[ingest_topic(s)]["spec"]["partitions"] for s in streams} == {12}  # streams.yaml states none
    for name, topic in topics.items():
        assert topic["metadata"]["name"] == resource_name(name)
        assert topic["spec"]["replicas"] == 3
        assert topic["spec"]["config"].get("min.insync.replicas", "2") == "2"


def test_a_name_kubernetes_cannot_hold_is_refused_with_its_reason() -> None:
    document = _compiled()
    document["bodies"] = {"Upper_Case": {"roles": ["dph"]}}
    with pytest.raises(ValueError, match="not a Kubernetes name"):
        render_k8s(document)


def test_every_deployment_has_probes_requests_and_runs_as_non_root() -> None:
    deployments = [d for d in _documents("accord.yaml") if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} >= {
        "accord-registry", "accord-api", "accord-governance", "accord-console", "accord-gate", "accord-opa"}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            where = f"{deployment['metadata']['name']}/{container['name']}"
            assert "livenessProbe" in container and "readinessProbe" in container, where
            assert container["resources"]["requests"], where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where


def test_each_gate_worker_has_its_own_opa_and_keda_scales_it_up_to_the_partitions() -> None:
    docs = _documents("accord.yaml", "keda.yaml")
    gate = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "accord-gate")
    containers = {c["name"]: c for c in gate["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"gate", "opa"}
    env = {e["name"]: e.get("value") for e in containers["gate"]["env"]}
    assert env["ACCORD_OPA_URL"] == "http://127.0.0.1:8181"
    assert "--addr=127.0.0.1:8181" in containers["opa"]["args"]
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "accord-gate"
    document = _compiled()
    assert scaled["spec"]["maxReplicaCount"] == max(partitions_of(document, s).ingest for s in document["streams"])
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == Settings().gate_group


# The trigger metadata KEDA's Kafka scaler reads, and the combinations it refuses, as KEDA 2.20.2 states them
# (pkg/scalers/kafka_scaler.go: kafkaMetadata and its Validate). The CRD types `metadata` as any string map, so a
# misspelt key or a refused combination would pass its schema and fail only in the running scaler.
_KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "version", "tls", "unsafeSsl", "sasl",
    "saslTokenProvider", "awsRegion"}


def _kafka_trigger_errors(metadata: dict[str, str]) -> list[str]:
    problems = [f"{key}: not a Kafka scaler setting" for key in sorted(set(metadata) - _KAFKA_TRIGGER_KEYS)]
    problems += [f"{key} is required" for key in ("bootstrapServers", "consumerGroup") if not metadata.get(key)]
    if not int(metadata.get("lagThreshold", "10")) > 0:
        problems.append("lagThreshold must be positive")
    if not int(metadata.get("activationLagThreshold", "0")) >= 0:
        problems.append("activationLagThreshold must not be negative")
    if metadata.get("offsetResetPolicy", "latest") not in ("latest", "earliest"):
        problems.append("offsetResetPolicy must be latest or earliest")
    flag = {key: metadata.get(key, "false") == "true" for key in (
        "allowIdleConsumers", "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions")}
    if flag["allowIdleConsumers"] and flag["limitToPartitionsWithLag"]:
        problems.append("allowIdleConsumers and limitToPartitionsWithLag cannot be set together")
    if flag["limitToPartitionsWithLag"] and flag["ensureEvenDistributionOfPartitions"]:
        problems.append("limitToPartitionsWithLag and ensureEvenDistributionOfPartitions cannot be set together")
    problems += [f"topic must be specified when using {key}" for key in (
        "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions") if flag[key] and not metadata.get("topic")]
    return problems


def test_the_kafka_trigger_is_one_kedas_kafka_scaler_accepts() -> None:
    (scaled,) = [d for d in _documents("keda.yaml") if d["kind"] == "ScaledObject"]
    (trigger,) = scaled["spec"]["triggers"]
    assert _kafka_trigger_errors(trigger["metadata"]) == []
    for change, reported in [({"limitToPartitionsWithLag": "true"}, "topic must be specified"),
                             ({"lagTreshold": "1000"}, "lagTreshold: not a Kafka scaler setting"),
                             ({"offsetResetPolicy": "smallest"}, "offsetResetPolicy must be"),
                             ({"lagThreshold": "0"}, "lagThreshold must be positive")]:
        assert any(reported in e for e in _kafka_trigger_errors({**trigger["metadata"], **change})), change


# Broker settings Strimzi 1.2.0 keeps for itself and drops from `spec.kafka.config` with only a warning in its log,
# and the exceptions it lets through (api/.../kafka/KafkaClusterSpec.java: FORBIDDEN_PREFIXES and
# FORBIDDEN_PREFIX_EXCEPTIONS). The CRD keeps `config` open, so its schema cannot say so.
_STRIMZI_OWN_CONFIG = (
    "listeners", "advertised.", "broker.", "listener.", "host.name", "port", "inter.broker.listener.name", "sasl.",
    "ssl.", "security.", "password.", "log.dir", "zookeeper.connect", "zookeeper.set.acl", "zookeeper.ssl",
    "zookeeper.clientCnxnSocket", "authorizer.", "super.user", "cruise.control.metrics.topic",
    "cruise.control.metrics.reporter.bootstrap.servers", "node.id", "process.roles", "controller.",
    "metadata.log.dir", "zookeeper.metadata.migration.enable", "client.quota.callback.static.kafka.admin.",
    "client.quota.callback.static.produce", "client.quota.callback.static.fetch",
    "client.quota.callback.static.storage.per.volume.limit.min.available.",
    "client.quota.callback.static.excluded.principal.name.list", "prometheus.metrics.reporter.", "cordoned.log.dirs")
_STRIMZI_CONFIG_EXCEPTIONS = {
    "zookeeper.connection.timeout.ms", "sasl.server.max.receive.size", "ssl.cipher.suites", "ssl.protocol",
    "ssl.enabled.protocols", "ssl.secure.random.implementation", "cruise.control.metrics.topic.num.partitions",
    "cruise.control.metrics.topic.replication.factor", "cruise.control.metrics.topic.retention.ms",
    "cruise.control.metrics.topic.auto.create.retries", "cruise.control.metrics.topic.auto.create.timeout.ms",
    "cruise.control.metrics.topic.min.insync.replicas", "broker.session.timeout.ms", "broker.heartbeat.interval.ms",
    "controller.socket.timeout.ms", "controller.quorum.election.backoff.max.ms",
    "controller.quorum.election.timeout.ms", "controller.quorum.fetch.timeout.ms"}


def _dropped_by_strimzi(config: dict[str, Any]) -> list[str]:
    return sorted(key for key in config
                  if key not in _STRIMZI_CONFIG_EXCEPTIONS and key.lower().startswith(_STRIMZI_OWN_CONFIG))


def test_the_kafka_config_holds_no_setting_strimzi_would_drop() -> None:
    (kafka,) = [d for d in _documents("kafka.yaml") if d["kind"] == "Kafka"]
    config = kafka["spec"]["kafka"]["config"]
    assert _dropped_by_strimzi(config) == []
    assert _dropped_by_strimzi({**config, "super.users": "User:x", "listener.name.x": "y", "ssl.protocol": "TLSv1.3",
                                "controller.quorum.fetch.timeout.ms": 2000}) == ["listener.name.x", "super.users"]


def test_the_image_is_the_one_the_dockerfile_builds_and_compose_runs() -> None:
    version = next(line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines()
                   if line.startswith("version ="))
    images = {c["image"] for d in _documents("accord.yaml") if d["kind"] == "Deployment"
              for c in [*d["spec"]["template"]["spec"]["containers"], *d["spec"]["template"]["spec"].get(
                  "initContainers", [])]}
    assert images - {"openpolicyagent/opa:1.22.2-static"} == {f"accord:{version}"}
    assert f"accord:{version}" in (ROOT / "deploy" / "compose" / "compose.yaml").read_text()


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {*STATIC, *GENERATED}


def test_the_command_writes_both_files(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "broker", "deploy", "render", "k8s", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "users.yaml").read_text() == (K8S / "generated" / "users.yaml").read_text()
    assert (tmp_path / "topics.yaml").read_text() == (K8S / "generated" / "topics.yaml").read_text()
