"""An in-memory JSON API for the HTTP source's unit tests, shaped like the UK coronavirus dashboard's: rows at or
after `since` (the watermark parameter), ordered by date then area, `page` counted from 1, `pagination.next` a
relative link or null, 204 when nothing matches; and scripted failures (a status, with headers) before answers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from broker.domain.pages import Answer
from broker.errors import ServiceError


class DashboardApi:
    def __init__(self, rows: list[dict[str, Any]], page_size: int = 3) -> None:
        self.rows, self.page_size = rows, page_size
        self.failures: list[Answer | None] = []  # answered (None: no answer) before the next real answer
        self.asked: list[dict[str, str]] = []

    def get(self, url: str, params: Sequence[tuple[str, str]], headers: Mapping[str, str]) -> Answer:
        query = dict(parse_qsl(urlsplit(url).query)) | dict(params)
        self.asked.append(query | {"authorization": headers.get("Authorization", "")})
        if self.failures:
            failure = self.failures.pop(0)
            if failure is None:
                raise ServiceError(f"no answer from {url} (ConnectError)")
            return failure
        since = query.get("since")
        chosen = sorted((r for r in self.rows if since is None or r.get("date", "") >= since),
                        key=lambda r: (r.get("date", ""), r["areaCode"]))
        if not chosen:
            return Answer(204)
        page = int(query.get("page", "1"))
        last = (len(chosen) + self.page_size - 1) // self.page_size
        data = chosen[(page - 1) * self.page_size: page * self.page_size]
        link = f"/v1/data?{'since=' + since + '&' if since else ''}page={page + 1}" if page < last else None
        body = {"length": len(data), "maxPageLimit": self.page_size, "data": data,
                "pagination": {"current": f"/v1/data?page={page}", "next": link, "last": f"/v1/data?page={last}"}}
        return Answer(200, json.dumps(body).encode(), {"content-type": "application/json"})
