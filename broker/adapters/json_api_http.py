"""An HTTP source's JsonApi port (connectors/sources/pacing.py) over httpx: GET a page, say what was answered.

Redirects are followed (an API may move its pages) but proxies from the environment are not used: the request
goes where the source's config says, with the headers it names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx

from broker.domain.pages import Answer
from broker.errors import ServiceError

MAX_ANSWER_BYTES = 256 * 1024 * 1024  # one page; an answer larger than this is refused, not held in memory


class HttpJsonApi:
    def __init__(self, timeout_s: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(timeout=timeout_s, transport=transport, trust_env=False, follow_redirects=True)

    def get(self, url: str, params: Sequence[tuple[str, str]], headers: Mapping[str, str]) -> Answer:
        try:
            target = httpx.URL(url)
            if params:  # added to the query the URL may already have (a next-page link carries its own)
                target = target.copy_merge_params(list(params))
            with self._client.stream("GET", target, headers=dict(headers)) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise ServiceError(f"{url} answered more than {MAX_ANSWER_BYTES} bytes for one page: "
                                           "ask for smaller pages")
                return Answer(response.status_code, bytes(body),
                              {k.lower(): v for k, v in response.headers.items()})
        except httpx.InvalidURL as exc:
            raise ServiceError(f"{url} is not a URL that can be asked ({exc})") from None
        except httpx.TransportError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise ServiceError(f"no answer from {url} ({detail})") from None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpJsonApi:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
