"""How many copies of each topic Accord keeps, by the size of the cluster.

On three or more brokers every topic Accord creates has three replicas and needs two in sync before a write
(with acks=all, which every Accord producer uses) is acknowledged: an acknowledged record survives the loss of any
one broker, and writes stop rather than go to a single copy. A single node can keep only one copy; two brokers
keep two, with one required in sync so that either may be restarted.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.errors import ConfigError

MIN_INSYNC_REPLICAS = "min.insync.replicas"


@dataclass(frozen=True)
class Durability:
    replication_factor: int
    min_insync_replicas: int

    def topic_configs(self) -> dict[str, str]:
        """The topic-level settings that go with the replication factor."""
        return {MIN_INSYNC_REPLICAS: str(self.min_insync_replicas)}


def durability(brokers: int) -> Durability:
    """The replication of a topic created on a cluster of `brokers` live brokers."""
    if brokers < 1:
        raise ConfigError(f"a Kafka cluster has at least one broker, not {brokers}")
    if brokers >= 3:
        return Durability(replication_factor=3, min_insync_replicas=2)
    return Durability(replication_factor=brokers, min_insync_replicas=1)
