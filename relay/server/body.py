"""Reading a client's JSON body: size, time and shape limits before anything parses it further."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from ..conversation import MAX_JSON_DEPTH, too_deep
from ..errors import InvalidRequest, RequestTimeout


async def read_json(request: web.Request, timeout: float) -> Any:
    """The decoded body, received within `timeout` seconds (REQUEST_BODY_TIMEOUT); oversize bodies
    are refused by aiohttp (client_max_size) before this parses.

    orjson refuses what must never reach claude.ai: invalid UTF-8 and lone surrogates (`\\ud800`).
    """
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(f"request body not received within {timeout:g} s") from None
    except web.RequestPayloadError as exc:
        detail = getattr(exc.__cause__, "message", "") or "malformed body"  # e.g. a gzip header on a plain body
        raise InvalidRequest(f"request body could not be read: {detail}") from None
    if not raw:
        raise InvalidRequest("request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if too_deep(body):
        raise InvalidRequest(f"request body is nested more than {MAX_JSON_DEPTH} levels deep")
    return body
