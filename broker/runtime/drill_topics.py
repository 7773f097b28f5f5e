"""The deployment's topics as a drill's clean-up sees them (services/drill_cleanup.DrillTopics): listed and deleted
with the admin client, and the gates' reports of the control records they applied."""

from __future__ import annotations

from collections.abc import Sequence

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_admin import delete_topics, end_positions, list_topics
from broker.adapters.kafka_log import KafkaLog
from broker.domain.topics import CONTROL_TOPIC
from broker.errors import ServiceError
from broker.services import policy_changes


class KafkaDrillTopics:
    def __init__(self, kafka: KafkaAccess) -> None:
        self._kafka = kafka

    def names(self) -> set[str]:
        return list_topics(self._kafka)

    def gates_applied(self, timeout_s: float) -> bool:
        end = sum(end_positions(self._kafka, [CONTROL_TOPIC]).values())
        if end == 0:
            return True     # no control record: no gate routes anything
        status = KafkaLog(self._kafka, client_id="accord-drill-cleanup")
        try:
            policy_changes.enforcement(status, policy_changes.Announced("", end - 1, 0), workers=1,
                                       timeout_s=timeout_s)
        except ServiceError:
            return False
        finally:
            status.close()
        return True

    def delete(self, names: Sequence[str]) -> dict[str, str]:
        return delete_topics(self._kafka, names)
