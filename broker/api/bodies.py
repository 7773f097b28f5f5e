"""Request bodies read with a size limit, so an oversized upload is refused before it is held in memory."""

from __future__ import annotations

import json
import math
import re
from array import array
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse


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


# 19 digits in a row may be an integer beyond 64 bits, which orjson would read as a float: the standard parser keeps
# it. Found by masking every byte to a digit or a space and looking for the run (a regex took four times orjson's time).
_DIGITS_ONLY = bytes(ord("9") if ord("0") <= b <= ord("9") else ord(" ") for b in range(256))
_LONG_DIGITS = b"9" * 19


def parse_json(raw: bytes) -> Any:
    """`raw` as strict JSON (no NaN or Infinity, no number too large for a float), or ValueError saying why not.

    orjson reads a publish body in a fraction of the time; anything it refuses, and any body that may hold an integer
    beyond 64 bits, is read by Python's own parser, whose answer (a value, or the error a publisher is shown) is the
    one the API has always given. Nesting is bounded before this is called (json_depth)."""
    if _LONG_DIGITS not in raw.translate(_DIGITS_ONLY):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw, parse_constant=_not_json, parse_float=_finite)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    # 1e999 parses as infinity, which strict JSON cannot carry back out (the quarantine endpoint could not answer).
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


class CompactJSONResponse(JSONResponse):
    """JSONResponse's body, written by orjson: the same compact UTF-8 JSON for the answers the API gives (text, whole
    numbers, lists and objects), made in a fraction of the time for a thousand outcomes."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:  # orjson.JSONEncodeError: a value it does not write as Starlette would; Starlette says
            return super().render(content)
