"""The HTTP source: poll a JSON API page by page and publish the rows it has not published yet.

Modelled on the UK coronavirus dashboard's API (`GET /v1/data?filters=areaType=nation;date>2020-06-01&structure=
{...}&page=N`, answering `{"length", "maxPageLimit", "data": [...], "pagination": {"current", "next", "last"}}`,
or 204 when nothing matches), but generic: where the rows are and where the next page is are paths in the answer
(`data`, `pagination.next`), or pages are counted in a query parameter (`page`) until one is empty or `last`.

Incremental by a watermark: a field of each row (`date`, `updated_at`, an id) whose highest value seen so far is
sent back in a query parameter at the next poll. The API is expected to answer rows *at or after* the watermark:
rows at exactly the stored watermark that were published before (their identities are kept with the position) are
skipped, so rows sharing a watermark value are neither repeated nor skipped, also when more of them appear later.

The position names the page being read and how many of its rows are done, so a restart reads on from there.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from broker.domain.pages import Answer
from broker.errors import ConfigError, ServiceError
from connectors.sources.base import Position, Reject, SourceBatch
from connectors.sources.coercion import CoercionError, Mapper
from connectors.sources.pacing import PoliteClient

NO_CONTENT = 204


class AnswerError(ServiceError):
    """The API answered something that is not a page of rows where the config says they are."""


class RequestRefused(ConfigError):
    """The API refused the request (a 4xx other than 408/429): its URL, parameters or token are wrong."""


@dataclass(frozen=True)
class Paging:
    """Where an answer's rows are and how the next page is found: `next` is a path to the next page's URL (relative
    to the page's own) or number; else `page_param` counts pages from `first_page` until a page has no rows or
    the number at path `last` is reached; with neither, an answer is the only page."""

    rows: str = "data"
    next: str | None = None
    page_param: str | None = None
    first_page: int = 1
    last: str | None = None


@dataclass(frozen=True)
class Watermark:
    """The row field that grows (`field`), the query parameter it is sent back in (`param`, its value written as
    `format`, e.g. `areaType=nation;date>={value}` for the dashboard's `filters`), and the fields that tell one row
    from another (`key`; default: the whole row), for rows that share the watermark's value."""

    field: str
    param: str | None = None
    format: str = "{value}"
    key: tuple[str, ...] = ()


@dataclass(frozen=True)
class HttpRequestPlan:
    """What to ask: the URL, its fixed query parameters and headers (a bearer token among them)."""

    url: str
    params: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)


def at_path(document: Any, path: str) -> Any:
    """The value at a dotted path (`pagination.next`, `data`, `results.0.rows`; `` or `$` is the whole answer),
    None when the answer has nothing there."""
    value = document
    for part in [p for p in path.removeprefix("$").split(".") if p]:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def order(value: Any) -> tuple[int, Any]:
    """How watermark values sort: numbers by value, anything else as text (ISO dates and times in one format)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def row_id(row: Mapping[str, Any], key: Sequence[str]) -> str:
    """A short stable identity of a row: its key fields, or the whole row."""
    named = [row.get(k) for k in key] if key else row
    return hashlib.sha256(json.dumps(named, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass
class _Poll:
    """A poll in progress: the watermark it asked from (with the rows already published at that value), the page
    being read, how many of its rows are done, and the highest watermark met so far with the rows at it."""

    watermark: Any
    seen: frozenset[str]
    page: dict[str, Any]
    skip: int = 0
    top: Any = None
    at_top: set[str] = field(default_factory=set)

    @classmethod
    def resume(cls, after: Position | None, first: dict[str, Any]) -> _Poll:
        if after is None:
            return cls(None, frozenset(), first)
        seen = frozenset(after.get("seen", ()))
        if after.get("page") is None:
            return cls(after.get("watermark"), seen, first)
        return cls(after.get("watermark"), seen, dict(after["page"]), int(after.get("skip", 0)),
                   after.get("top"), set(after.get("at_top", ())))

    def is_new(self, mark: Any, ident: str) -> bool:
        if self.watermark is None:
            return True
        return order(mark) > order(self.watermark) or (order(mark) == order(self.watermark)
                                                        and ident not in self.seen)

    def met(self, mark: Any, ident: str) -> None:
        if self.top is None or order(mark) > order(self.top):
            self.top, self.at_top = mark, {ident}
        elif order(mark) == order(self.top):
            self.at_top.add(ident)

    def position(self) -> dict[str, Any]:
        """Mid-poll: read on from this page and row."""
        return {"watermark": self.watermark, "seen": sorted(self.seen), "page": self.page, "skip": self.skip,
                "top": self.top, "at_top": sorted(self.at_top)}

    def finished(self) -> dict[str, Any]:
        """The poll read its last page: the next one asks from the highest watermark met."""
        if self.top is None or (self.watermark is not None and order(self.top) < order(self.watermark)):
            return {"watermark": self.watermark, "seen": sorted(self.seen), "page": None}
        if self.watermark is not None and order(self.top) == order(self.watermark):
            return {"watermark": self.watermark, "seen": sorted(self.seen | self.at_top), "page": None}
        return {"watermark": self.top, "seen": sorted(self.at_top), "page": None}


class HttpSource:
    """One JSON API polled into one stream; `batches` reads every page of one poll and ends (follow mode polls
    again after a pause)."""

    def __init__(self, client: PoliteClient, plan: HttpRequestPlan, paging: Paging, watermark: Watermark,
                 mapper: Mapper, max_rows: int = 2000, max_bytes: int = 900_000,
                 auth: Callable[[], Mapping[str, str]] = dict) -> None:
        """`auth`: headers added to each request, asked for anew each time (a token file replaced on disk)."""
        self.client, self.plan, self.paging, self.watermark, self.mapper = client, plan, paging, watermark, mapper
        self.max_rows, self.max_bytes, self.auth = max_rows, max_bytes, auth

    def batches(self, after: Position | None) -> Iterator[SourceBatch]:
        poll = _Poll.resume(after, self._first_page())
        start: Position | None = after
        records: list[dict[str, Any]] = []
        wheres: list[str] = []
        rejects: list[Reject] = []
        size = count = 0
        while True:
            page = dict(poll.page)
            rows, following = self._read(page, poll.watermark)
            for index in range(poll.skip, len(rows)):
                poll.skip = index + 1
                item = self._row(rows[index], page, index, poll)
                if item is None:
                    continue
                if isinstance(item, Reject):
                    rejects.append(item)
                else:
                    records.append(item[0])
                    wheres.append(item[1])
                    size += len(json.dumps(item[0], default=str)) + 1
                count += 1
                if count >= self.max_rows or size >= self.max_bytes:
                    end = _after_row(poll, len(rows), following)
                    yield SourceBatch(records, wheres, rejects, start, end, count)
                    start, records, wheres, rejects, size, count = end, [], [], [], 0, 0
            if following is None:
                end = poll.finished()
                if count or end != (start or {"watermark": None, "seen": [], "page": None}):
                    yield SourceBatch(records, wheres, rejects, start, end, count)
                return
            poll.page, poll.skip = following, 0

    def _first_page(self) -> dict[str, Any]:
        return {"number": self.paging.first_page} if self.paging.page_param else {"url": None}

    def _row(self, row: Any, page: Mapping[str, Any], index: int,
             poll: _Poll) -> tuple[dict[str, Any], str] | Reject | None:
        """The row's record and where it came from, a Reject, or None for a row published before."""
        where = f"{_shown(page)} row {index + 1}"
        if not isinstance(row, Mapping):
            return Reject(where, "the row is not a JSON object", row)
        mark = at_path(row, self.watermark.field)
        if mark is None or isinstance(mark, Mapping | list):
            return Reject(where, f"the row has no watermark value at {self.watermark.field!r}", dict(row))
        ident = row_id(row, self.watermark.key)
        if not poll.is_new(mark, ident):
            return None
        poll.met(mark, ident)
        where = f"{where} ({self.watermark.field}={mark})"
        try:
            return self.mapper.record(row), where
        except CoercionError as exc:
            return Reject(where, str(exc), dict(row))

    def _read(self, page: Mapping[str, Any], watermark: Any) -> tuple[list[Any], dict[str, Any] | None]:
        """The rows of `page` and the page after it (None: this is the last)."""
        url = page.get("url") or self.plan.url
        params: list[tuple[str, str]] = []
        if page.get("url") is None:
            params = self._params(watermark)
            if self.paging.page_param:
                params.append((self.paging.page_param, str(page["number"])))
        answer = self.client.get(url, params, {**self.plan.headers, **self.auth()})
        if answer.status == NO_CONTENT:
            return [], None
        document = self._document(url, answer)
        rows = at_path(document, self.paging.rows)
        if rows is None:
            rows = []
        if not isinstance(rows, list):
            raise AnswerError(f"{url}: `{self.paging.rows}` in the answer is not a list of rows")
        return rows, self._following(url, page, document, rows)

    def _params(self, watermark: Any) -> list[tuple[str, str]]:
        params = list(self.plan.params)
        param = self.watermark.param
        if watermark is not None and param:
            params = [(k, v) for k, v in params if k != param]
            params.append((param, self.watermark.format.format(value=watermark)))
        return params

    def _document(self, url: str, answer: Answer) -> Any:
        if not 200 <= answer.status < 300:
            text = " ".join(answer.body[:300].decode("utf-8", "replace").split())
            if 400 <= answer.status < 500:
                raise RequestRefused(f"{url} refused the request ({answer.status}): {text}; check the source's "
                                     "url, params and token")
            raise AnswerError(f"{url} answered {answer.status}: {text}")
        try:
            return json.loads(answer.body)
        except ValueError as exc:
            raise AnswerError(f"{url} answered what is not JSON ({exc})") from None

    def _following(self, url: str, page: Mapping[str, Any], document: Any,
                   rows: list[Any]) -> dict[str, Any] | None:
        if self.paging.next:
            link = at_path(document, self.paging.next)
            if link is None or link == "":
                return None
            if isinstance(link, int) and not isinstance(link, bool):
                return {"number": link} if link != page.get("number") else None
            target = urljoin(url, str(link))
            if target == page.get("url"):
                raise AnswerError(f"{url}: the next page `{self.paging.next}` is the page itself")
            return {"url": target}
        if self.paging.page_param:
            number = int(page["number"])
            last = _number(at_path(document, self.paging.last)) if self.paging.last else None
            if not rows or (last is not None and number >= last):
                return None
            return {"number": number + 1}
        return None


def _after_row(poll: _Poll, rows: int, following: dict[str, Any] | None) -> dict[str, Any]:
    """The position just after the row `poll.skip` of a page of `rows` rows."""
    if poll.skip < rows:
        return poll.position()
    if following is not None:
        return {**poll.position(), "page": following, "skip": 0}
    return poll.finished()


def _number(value: Any) -> int | None:
    """A page number: a number, digits, or the `page=N` of a link (the dashboard's `pagination.last`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if value is None:
        return None
    found = re.search(r"^(\d+)$|[?&]page=(\d+)(?:&|$)", str(value))
    return int(found[1] or found[2]) if found else None


def _shown(page: Mapping[str, Any]) -> str:
    return f"page {page['number']}" if page.get("number") is not None else str(page.get("url") or "page 1")
