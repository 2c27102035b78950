"""Reading a client's JSON body: size, time and shape limits before anything parses it further.

Compressed bodies are inflated here, not by aiohttp (the app turns its `auto_decompress` off):
aiohttp inflates what arrives ahead of the reader, so a few hundred kilobytes of gzip could fill
hundreds of megabytes before MAX_BODY_SIZE was checked. Here the output stops at the limit.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..config import Settings
from ..conversation import MAX_JSON_DEPTH, too_deep
from ..errors import InvalidRequest, PayloadTooLarge, RequestTimeout

# zlib window bits: gzip framing, zlib framing, raw deflate (what some clients send as "deflate").
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """REQUEST_BODY_TIMEOUT and MAX_BODY_SIZE (which also caps what a compressed body inflates to)."""

    timeout: float
    max_size: int

    @classmethod
    def of(cls, settings: Settings) -> BodyLimits:
        return cls(settings.request_body_timeout, settings.max_body_size)


async def read_json(request: web.Request, limits: BodyLimits) -> Any:
    """The decoded body; oversize bodies are refused by aiohttp (client_max_size) before this parses.

    orjson refuses what must never reach claude.ai: invalid UTF-8 and lone surrogates (`\\ud800`).
    """
    raw = await read_body(request, limits)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if too_deep(body):
        raise InvalidRequest(f"request body is nested more than {MAX_JSON_DEPTH} levels deep")
    return body


async def read_body(request: web.Request, limits: BodyLimits) -> bytes:
    """The raw body within the time and size limits, inflated if compressed; never empty."""
    try:
        async with asyncio.timeout(limits.timeout):
            raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(f"request body not received within {limits.timeout:g} s") from None
    except web.RequestPayloadError as exc:
        detail = getattr(exc.__cause__, "message", "") or "malformed body"
        raise InvalidRequest(f"request body could not be read: {detail}") from None
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raw = _inflate(raw, encoding, limits.max_size)
    if not raw:
        raise InvalidRequest("request body is empty; send a JSON object")
    return raw


def _inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, inflated to at most `limit` bytes."""
    if encoding not in _WBITS:
        raise InvalidRequest(f"Content-Encoding {encoding[:40]!r} is not supported; send gzip, deflate or none")
    wbits = _WBITS[encoding]
    if wbits == 15 and raw[:1] and raw[0] & 0x0F != 8:
        wbits = -15  # deflate without the zlib header, as some clients send it
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise InvalidRequest(f"request body could not be read: it is not valid {encoding}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge("request body is too large once inflated (see MAX_BODY_SIZE)")
    if not inflater.eof:
        raise InvalidRequest(f"request body could not be read: the {encoding} data is cut short")
    return out
