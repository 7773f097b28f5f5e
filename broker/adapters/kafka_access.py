"""How one Kafka principal reaches the cluster: the bootstrap servers and its SASL/SCRAM credentials.

Every Kafka client Accord makes takes a KafkaAccess, never a bare bootstrap string, so no client can forget to
authenticate. The password is a SecretStr: it shows as '**********' in reprs, logs and error messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from broker.errors import ConfigError

SCRAM_MECHANISM = "SCRAM-SHA-512"
SECURITY_PROTOCOLS = frozenset({"PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"})
# kafka-python warns on every SCRAM login over SASL_PLAINTEXT that credentials are "exchanged in the clear". With
# SCRAM the password never crosses the wire (only a salted, nonce-bound proof does), so the warning, repeated per
# connection, is noise; on an untrusted network use SASL_SSL all the same.
logging.getLogger("kafka.net.sasl.scram").setLevel(logging.ERROR)


@dataclass(frozen=True)
class KafkaAccess:
    """`bootstrap` plus, for a SASL listener, the principal's user name and password."""

    bootstrap: str
    username: str | None = None
    password: SecretStr | None = None
    security_protocol: str = "PLAINTEXT"
    mechanism: str = SCRAM_MECHANISM

    def __post_init__(self) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"Kafka security protocol {self.security_protocol!r} is not one of "
                              f"{', '.join(sorted(SECURITY_PROTOCOLS))}")
        if self.security_protocol.startswith("SASL_") and (not self.username or self.password is None):
            raise ConfigError(f"Kafka at {self.bootstrap} needs SASL credentials: set ACCORD_KAFKA_USERNAME and "
                              "ACCORD_KAFKA_PASSWORD (or ACCORD_KAFKA_PASSWORD_FILE)")

    @classmethod
    def scram(cls, bootstrap: str, username: str, password: str, tls: bool = False) -> KafkaAccess:
        return cls(bootstrap, username, SecretStr(password), "SASL_SSL" if tls else "SASL_PLAINTEXT")

    def as_user(self, username: str, password: str) -> KafkaAccess:
        """The same cluster and protocol, another principal."""
        protocol = self.security_protocol if self.security_protocol.startswith("SASL_") else "SASL_PLAINTEXT"
        return replace(self, username=username, password=SecretStr(password), security_protocol=protocol)

    @property
    def principal(self) -> str:
        return f"User:{self.username}" if self.username else "User:ANONYMOUS"

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL_"):
            assert self.password is not None  # checked in __post_init__
            options |= {"sasl_mechanism": self.mechanism, "sasl_plain_username": self.username,
                        "sasl_plain_password": self.password.get_secret_value()}
        return options

    def librdkafka_options(self) -> dict[str, str]:
        """The same, as librdkafka (confluent-kafka, kcat) properties."""
        options = {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol.lower()}
        if self.security_protocol.startswith("SASL_"):
            assert self.password is not None
            options |= {"sasl.mechanisms": self.mechanism, "sasl.username": str(self.username),
                        "sasl.password": self.password.get_secret_value()}
        return options

    def __str__(self) -> str:
        return f"{self.bootstrap} as {self.principal}"


def read_password_file(path: Path) -> str:
    try:
        password = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"no Kafka password at {path}") from None
    if not password:
        raise ConfigError(f"{path} is empty; it should hold a Kafka password")
    return password
