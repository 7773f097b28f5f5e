"""Request bodies read with a size limit, so an oversized upload is refused before it is held in memory."""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable
from itertools import accumulate

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


# A JSON string (escapes included); its brackets are text, not nesting. Runs of plain characters between escapes
# ("unrolled"): the same strings as one alternation per character, matched faster.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_BRACKETS_OR_QUOTES = bytes(b for b in range(256) if b not in b'[]{}"')
# An opening bracket as the signed byte 1, a closing one as -1 (0xFF), so the running depth is summed in C.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_depth(raw: bytes) -> int:
    """How deeply `raw` nests arrays and objects, counted without parsing (so without recursion): Python's JSON
    parser raises RecursionError on deep nesting, which must be refused before it is reached."""
    brackets = _outside_strings(raw).translate(_STEPS, _NOT_BRACKETS)
    return max(0, max(accumulate(array("b", brackets)), default=0))


def _outside_strings(raw: bytes) -> bytes:
    if b"\\" in raw:
        return _JSON_STRING.sub(b"", raw)
    # Without escapes a string is what lies between a quote and the next one: split, not matched character by
    # character (the match took longer than parsing the body). After an unclosed quote the rest stays, as above.
    parts = raw.translate(None, _NOT_BRACKETS_OR_QUOTES).split(b'"')
    return b"".join(parts[::2] if len(parts) % 2 else [*parts[::2], parts[-1]])


def is_json_media_type(content_type: str | None) -> bool:
    """True for application/json and any application/*+json (parameters such as charset allowed), or no type at
    all: a client that names another type (text/plain, a form) is refused rather than guessed at."""
    if content_type is None or not content_type.strip():
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
