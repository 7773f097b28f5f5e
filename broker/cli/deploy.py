"""`accord deploy render k8s`: the Strimzi resources of a national deployment, from the catalog Accord applies.

Static manifests (the Kafka cluster, Accord's Deployments, NetworkPolicies, autoscaling) are in deploy/k8s; what
depends on the catalog (each stream's topics, each body's and role's login with exactly its ACLs) is rendered here
from the same code that provisions the local Kafka (domain/kafka_acls.py) and names the topics (domain/topics.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from broker.cli.context import current_settings

deploy_cli = typer.Typer(help="Deployment manifests rendered from the catalog.", no_args_is_help=True)
render_cli = typer.Typer(help="Render manifests for a platform.", no_args_is_help=True)
deploy_cli.add_typer(render_cli, name="render")


def internal_topics() -> dict[str, dict[str, str]]:
    """Accord's own topics and the configurations its services create them with."""
    from broker.adapters.kafka_admin import CHANGELOG_TOPIC_CONFIG, TRAIL_TOPIC_CONFIG
    from broker.adapters.kafka_control import CONTROL_TOPIC_CONFIG, OPTOUT_TOPIC_CONFIG, STATUS_TOPIC_CONFIG
    from broker.adapters.kafka_history import BACKFILL_TOPIC_CONFIG
    from broker.adapters.kafka_ingest_requests import INGEST_REQUESTS_TOPIC_CONFIG
    from broker.domain import topics

    return {topics.CONTROL_TOPIC: CONTROL_TOPIC_CONFIG, topics.STATUS_TOPIC: STATUS_TOPIC_CONFIG,
            topics.GOVERNANCE_TOPIC: TRAIL_TOPIC_CONFIG, topics.AUDIT_TOPIC: TRAIL_TOPIC_CONFIG,
            topics.CHAIN_TOPIC: TRAIL_TOPIC_CONFIG, topics.SCHEMAS_TOPIC: CHANGELOG_TOPIC_CONFIG,
            topics.OPTOUT_TOPIC: OPTOUT_TOPIC_CONFIG, topics.BACKFILL_TOPIC: BACKFILL_TOPIC_CONFIG,
            topics.INGEST_REQUESTS_TOPIC: INGEST_REQUESTS_TOPIC_CONFIG}


def render_k8s(document: dict[str, Any], cluster: str = "accord", namespace: str = "accord",
               replicas: int = 3) -> dict[str, list[dict[str, Any]]]:
    """{file name: resources} for the compiled catalog `document`: topics.yaml and users.yaml."""
    from broker.domain import strimzi
    from broker.domain.kafka_acls import bodies_from_catalog
    from broker.domain.partitions import partitions_of
    from broker.domain.topics import ingest_topic, quarantine_topic

    target = strimzi.Target(cluster, namespace, replicas, min(2, replicas))
    streams = sorted(document.get("streams", {}))
    specs = [strimzi.TopicSpec(name, 1, config) for name, config in sorted(internal_topics().items())]
    for stream in streams:
        specs += [strimzi.TopicSpec(ingest_topic(stream), partitions_of(document, stream).ingest, {}),
                  strimzi.TopicSpec(quarantine_topic(stream), 1, {})]
    parties = bodies_from_catalog(document.get("bodies", {}), streams)
    return {"topics.yaml": [strimzi.kafka_topic(spec, target) for spec in specs],
            "users.yaml": strimzi.kafka_users(parties, target)}


def as_yaml(resources: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(resources, sort_keys=False, default_flow_style=False)


@render_cli.command("k8s")
def render_k8s_command(
    out: Annotated[Path | None, typer.Option(help="write topics.yaml and users.yaml here (default: print them)")]
    = None,
    catalog: Annotated[Path | None, typer.Option(help="catalog directory (default: ACCORD_CATALOG_DIR)")] = None,
    cluster: Annotated[str, typer.Option(help="the Strimzi Kafka resource's name")] = "accord",
    namespace: Annotated[str, typer.Option(help="the namespace of the Kafka cluster")] = "accord",
    replicas: Annotated[int, typer.Option(min=1, help="replicas of each topic")] = 3,
) -> None:
    """Strimzi KafkaTopic resources for every topic Accord makes ahead of time (its own, and each stream's ingest
    topic, with the catalog's `partitions`, and quarantine topic), and a SCRAM KafkaUser with exactly Accord's ACLs
    for every service, publishing body and role of a body. Delivery topics are made by the gate when a plan first
    needs them, with the stream's `delivery_partitions`."""
    from broker.catalog import load_and_compile

    settings = current_settings()
    document = load_and_compile(catalog or settings.catalog_dir, settings.schemas_dir)
    try:
        rendered = render_k8s(document, cluster, namespace, replicas)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if out is None:
        typer.echo("---\n".join(as_yaml(resources) for resources in rendered.values()), nl=False)
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, resources in rendered.items():
        (out / name).write_text(as_yaml(resources))
        typer.echo(f"wrote {out / name} ({len(resources)} resources)")
