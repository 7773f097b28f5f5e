"""The demo's subscriber door: Leicester's DPH's PostgreSQL sink, configured as a council would (its own Kafka
login, a registry token, its own database), fills a table with the day's rows while the demo watches it."""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.adapters.postgres import PostgresDatabase
from broker.clock import system_clock
from broker.config import Settings
from broker.domain.kafka_acls import subscriber_user
from broker.local import postgres_server
from broker.local.stack import Endpoints
from broker.runtime import connect
from broker.security import api_tokens
from broker.security.kafka_identities import password_path
from connectors.config import SinkConfig

BODY, ROLE, TABLE = "leicester-city-council", "dph", "positive_tests"


def fill_table(endpoints: Endpoints, settings: Settings, dsn: str, stream: str, prefix: str, expected: int,
               say: Callable[[str], None], timeout_s: float = 120.0) -> dict[str, Any]:
    """Run the sink until the table holds the `expected` rows whose specimen_id starts with `prefix`."""
    password = postgres_server.password_file(settings.secrets_dir).read_text().strip()
    with tempfile.TemporaryDirectory(prefix="accord-demo-sink-") as folder:
        token = Path(folder) / "registry.token"
        api_tokens.write_token(token, api_tokens.issue(api_tokens.signing_key(settings.secrets_dir), BODY, ROLE,
                                                       "Leicester DPH's sink", dt.timedelta(minutes=15),
                                                       system_clock()))
        config = SinkConfig.model_validate({
            "sink": "postgres", "body": BODY, "role": ROLE,
            "kafka": {"bootstrap": endpoints.kafka.bootstrap,
                      "password_file": password_path(settings.secrets_dir, subscriber_user(BODY, ROLE))},
            "registry": {"url": endpoints.registry_url, "token_file": token},
            "postgres": {"dsn": dsn, "password_file": postgres_server.password_file(settings.secrets_dir)},
            "deliveries": [{"stream": stream, "table": TABLE, "key": ["specimen_id"]}]})
        stopping, failure = threading.Event(), list[BaseException]()

        def sink() -> None:
            try:
                connect.run(config, stopping.is_set, max_records=500)
            except BaseException as exc:  # reported below, with the table as it is
                failure.append(exc)

        thread = threading.Thread(target=sink, name="demo-sink", daemon=True)
        thread.start()
        with PostgresDatabase(dsn, password, application_name="accord-demo") as database:
            def rows() -> int:
                if not database.query("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))[0][0]:
                    return 0
                return int(database.query(f"SELECT count(*) FROM {TABLE} WHERE specimen_id LIKE %s",
                                          (prefix + "-%",))[0][0])
            deadline = time.monotonic() + timeout_s
            while (stored := rows()) < expected and not failure and time.monotonic() < deadline:
                time.sleep(0.2)
            stopping.set()
            thread.join(timeout=60)
            if failure:
                raise failure[0]
            made = bool(database.query("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))[0][0])
            total = int(database.query(f"SELECT count(*) FROM {TABLE}")[0][0]) if made else 0
            sample = database.query(f"SELECT specimen_id, specimen_date, lsoa FROM {TABLE} WHERE specimen_id LIKE %s "
                                    "ORDER BY specimen_id LIMIT 1", (prefix + "-%",)) if made else []
    if stored < expected:
        say(f"3. Leicester's DPH's PostgreSQL sink stored only {stored} of the day's {expected} rows in table {TABLE} "
            f"within {timeout_s:.0f}s (it reads the whole delivery topic: {total} rows so far); `accord connect "
            "status` shows its lag")
        return {"table": TABLE, "rows": stored, "total": total}
    say(f"3. Leicester's DPH's PostgreSQL sink (`accord connect run`, its own Kafka login) stored the day's {stored} "
        f"rows in table {TABLE} ({total} rows in all) of {dsn}; position kept in accord_positions")
    if sample:
        say(f"     e.g. SELECT specimen_id, specimen_date, lsoa FROM {TABLE}: {sample[0]}")
    return {"table": TABLE, "rows": stored, "total": total}
