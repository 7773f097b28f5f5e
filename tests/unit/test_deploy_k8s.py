"""deploy/k8s validates offline against the Kubernetes schemas (kubernetes-validate ships them), Strimzi's and KEDA's
(deploy/schemas), and `accord deploy render k8s` renders exactly the users, ACLs and topics Accord keeps."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
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
CRD_SCHEMAS = {"kafka.strimzi.io": "strimzi-1.2.0.json", "keda.sh": "keda-2.json"}


def _documents(*names: str) -> list[dict[str, Any]]:
    return [doc for name in names for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def _compiled() -> dict[str, Any]:
    settings = Settings()
    return load_and_compile(settings.catalog_dir, settings.schemas_dir)


def _errors(doc: dict[str, Any]) -> list[str]:
    group = doc["apiVersion"].split("/")[0]
    if group in CRD_SCHEMAS:
        schema = json.loads((SCHEMAS / CRD_SCHEMAS[group]).read_text())
        if doc["kind"] not in schema["$defs"]:
            return [f"{doc['kind']} has no schema in {CRD_SCHEMAS[group]}"]
        validator = jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{doc['kind']}"})
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
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


def test_the_schemas_catch_a_misspelt_field() -> None:
    deployment = copy.deepcopy(next(d for d in _documents("accord.yaml") if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert _errors(deployment)
    user = copy.deepcopy(_documents("generated/users.yaml")[0])
    user["spec"]["authorization"]["acls"][0]["operations"] = ["Reed"]
    assert _errors(user)
    pool = copy.deepcopy(next(d for d in _documents("kafka.yaml") if d["kind"] == "KafkaNodePool"))
    pool["spec"]["roles"] = ["zookeeper"]
    assert _errors(pool)
    scaled = copy.deepcopy(next(d for d in _documents("keda.yaml") if d["kind"] == "ScaledObject"))
    scaled["spec"]["maxReplicas"] = 4
    assert _errors(scaled)


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
