"""Request bodies read with a size limit, so an oversized upload is refused before it is held in memory."""

from __future__ import annotations

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
