"""The local stack's processes as the drill's fail-closed check drives them (services/drill_closed.py): its OPA
stopped and held (the supervisor leaves it alone) and started again on its port, a gate worker killed with SIGKILL
and running again (restarted by the supervisor, or by the drill when none runs), and validated ingest straight onto
the ingest topics while the ingest API, whose authorisation is OPA's, refuses every call."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from broker.adapters.kafka_access import KafkaAccess
from broker.adapters.kafka_log import KafkaLog
from broker.adapters.registry_http import HttpSchemaRegistry
from broker.config import Settings
from broker.domain.geography_files import load_la_table
from broker.domain.schemas import RegisteredSchema
from broker.domain.topics import ingest_topic, value_subject
from broker.errors import ServiceError, ServiceStartError
from broker.local import opa_server, processes
from broker.local.python_service import PythonService
from broker.local.stack import LocalStack
from broker.security.api_tokens import ServiceTokens
from broker.services.ingest import Ingest
from broker.services.stream_schemas import StreamSchemas

POLL_S = 0.2


class LocalProcesses:
    """OPA and a gate worker of a local stack. The gate worker is the stack's own unless `gate` names another
    (a test's), which `start_gate` starts again after it is killed."""

    def __init__(self, stack: LocalStack, gate: PythonService | None = None,
                 start_gate: Callable[[], object] | None = None) -> None:
        self._stack, self._gate = stack, gate or stack.gate
        self._start_gate = start_gate or (lambda: stack.restart("gate"))
        self._killed: int | None = None

    def stop_opa(self, hold_s: float) -> None:
        with self._stack.locked():
            self._stack.supervisor.hold("opa", hold_s)   # before it stops: the supervisor's next look finds it
            pid = self._stack.pid("opa")
            if not processes.stop(pid, opa_server.MARKER):
                raise ServiceError(f"the local OPA (pid {pid}) was not running, so the drill could not stop it")

    def start_opa(self) -> None:
        try:
            self._stack.restart("opa")
        finally:
            self._stack.supervisor.hold("opa", 0)

    def kill_gate(self) -> str:
        pid = processes.read_pid(self._gate.pid_file)
        if pid is None or not self._gate.running():
            raise ServiceError("no local gate worker runs (`accord local status`), so the drill cannot kill one")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self._gate.running() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):     # the drill's (a test's) own child: collect it
                os.waitpid(pid, os.WNOHANG)
            time.sleep(POLL_S)
        self._killed = pid
        return f"pid {pid}"

    def gate_back(self, timeout_s: float) -> str:
        supervised = self._gate is self._stack.gate and self._stack.supervisor.running()
        deadline = time.monotonic() + timeout_s
        if supervised:
            while time.monotonic() < deadline:
                pid = processes.read_pid(self._gate.pid_file)
                if self._gate.running() and pid != self._killed:
                    return f"restarted by the supervisor as pid {pid}"
                time.sleep(POLL_S)
            raise ServiceStartError(f"the supervisor did not start the gate worker again within {timeout_s:g} s "
                                    "(`accord local status` says why)")
        self._start_gate()
        return f"started again by the drill as pid {processes.read_pid(self._gate.pid_file)} (no supervisor runs)"


class _Remembered:
    """A schema registry whose answers to `register` are kept: once asked while OPA was up, ingest encodes
    records of the subject with the registry (which asks OPA) unreachable."""

    def __init__(self, registry: HttpSchemaRegistry) -> None:
        self._registry = registry
        self._ids: dict[tuple[str, str], int] = {}

    def register(self, subject: str, schema: str) -> int:
        if (subject, schema) not in self._ids:
            self._ids[subject, schema] = self._registry.register(subject, schema)
        return self._ids[subject, schema]

    def schema_by_id(self, schema_id: int) -> str:
        return self._registry.schema_by_id(schema_id)

    def latest(self, subject: str) -> RegisteredSchema:
        return self._registry.latest(subject)

    def set_compatibility(self, subject: str, mode: str) -> None:
        self._registry.set_compatibility(subject, mode)


class KafkaDirectIngest:
    """Accord's validated ingest (services/ingest.py, as the API runs it) over Kafka as the drill's principal."""

    def __init__(self, kafka: KafkaAccess, registry_url: str, settings: Settings,
                 catalog: Callable[[], Mapping[str, Any] | None]) -> None:
        # The registry as the ingest API calls it: the schema is registered under the ingest topic's subject.
        self._http = HttpSchemaRegistry(registry_url, token=ServiceTokens(settings.secrets_dir, "api"))
        self._registry = _Remembered(self._http)
        self._log = KafkaLog(kafka, client_id="accord-drill-ingest")
        self._la, self._catalog = load_la_table(settings.geography_dir), catalog
        self._ingest: dict[str, Ingest] = {}

    def prepare(self, stream: str) -> None:
        schema = StreamSchemas(lambda: self._catalog() or {}, self._registry).lookup(stream)
        if schema is None:
            raise ServiceError(f"the applied catalog names no stream {stream}")
        self._registry.register(value_subject(ingest_topic(stream)), json.dumps(schema))
        self._ingest[stream] = Ingest(self._log, self._registry, {stream: schema}, self._la,
                                      lambda: dt.datetime.now(dt.UTC).date())

    def publish(self, stream: str, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        if stream not in self._ingest:
            raise ServiceError(f"stream {stream} was not prepared for publishing without the ingest API")
        return [o.as_json() for o in self._ingest[stream].publish(stream, records, source="drill")]

    def close(self) -> None:
        self._log.close()
        self._http.close()
