"""Running kcat against the session's Kafka: its login on the command line, and a librdkafka that Kafka 4 accepts.

Debian's kcat is built without Avro (no libserdes), so `-s value=avro` needs a kcat built with it: the one on PATH
if it has Avro, else the one named by ACCORD_TEST_KCAT. Tests that need Avro skip when neither has it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from broker.adapters.kafka_access import KafkaAccess

AVRO_KCAT_VARIABLE = "ACCORD_TEST_KCAT"


def kcat_path() -> str | None:
    return shutil.which("kcat")


def _has_avro(kcat: str) -> bool:
    done = subprocess.run([kcat, "-V"], capture_output=True, timeout=30, check=False)
    return b"Avro" in done.stdout + done.stderr


def avro_kcat_path() -> str | None:
    """A kcat that deserialises Avro through a schema registry (`-s value=avro -r URL`), or None."""
    for candidate in (os.environ.get(AVRO_KCAT_VARIABLE), kcat_path()):
        if candidate and Path(candidate).is_file() and _has_avro(candidate):
            return candidate
    return None


def login(kafka: KafkaAccess) -> list[str]:
    """kcat's `-X` properties for `kafka`'s user (a test's throwaway password)."""
    return [arg for key, value in kafka.librdkafka_options().items() for arg in ("-X", f"{key}={value}")]


def kcat_env(kcat: str, kafka: KafkaAccess, directory: Path) -> dict[str, str]:
    """The environment kcat logs in with: its own librdkafka, or the SCRAM-fixed one of the confluent-kafka wheel.

    librdkafka before 2.6.1 sent a wrong nonce in its SCRAM client-final message; Kafka 4 checks the nonce as RFC
    5802 requires and refuses the login (confluentinc/librdkafka#4895). Debian's kcat 1.7.1 links librdkafka 2.0.2.
    librdkafka keeps its ABI, so the same kcat runs on the newer library.
    """
    probe = subprocess.run([kcat, *login(kafka), "-L", "-m", "10"], capture_output=True, timeout=60, check=False)
    if b"invalid credentials" not in probe.stderr:
        return dict(os.environ)
    import confluent_kafka

    wheel_libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    found = sorted(wheel_libs.glob("librdkafka*.so.1"))
    assert found, f"no librdkafka in {wheel_libs}"
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(found[0])
    return {**os.environ, "LD_LIBRARY_PATH": str(directory)}


def consume_one(kafka: KafkaAccess, topic: str, group: str) -> bytes:
    """The first committed record of `topic`, read with librdkafka (confluent-kafka) in consumer group `group`."""
    from confluent_kafka import Consumer

    consumer = Consumer({**kafka.librdkafka_options(), "group.id": group, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    try:
        for _ in range(100):
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                value = message.value()
                assert isinstance(value, bytes)
                return value
    finally:
        consumer.close()
    raise AssertionError(f"no record arrived on {topic}")
