"""Request bodies read with a size limit, so an oversized upload is refused before it is held in memory."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import Request


async def read_limited(request: Request, limit: int, too_large: Callable[[str], Exception]) -> bytes:
    """The body, or `too_large(message)` raised as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise too_large(f"request body exceeds the limit of {limit} bytes")
    return bytes(raw)


# A JSON string (escapes included); its brackets are text, not nesting.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes) -> int:
    """How deeply `raw` nests arrays and objects, counted without parsing (so without recursion): Python's JSON
    parser raises RecursionError on deep nesting, which must be refused before it is reached."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def is_json_media_type(content_type: str | None) -> bool:
    """True for application/json and any application/*+json (parameters such as charset allowed), or no type at
    all: a client that names another type (text/plain, a form) is refused rather than guessed at."""
    if content_type is None or not content_type.strip():
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
