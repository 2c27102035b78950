"""A client that hangs up at any point of an answer: a 499 in the log and the metrics, never an
ERROR with a traceback; the upstream stream is closed and its chat deleted like any other hang-up.

Each moment is reproduced on purpose, not by luck: the fake holds the answer at the moment (before
its headers, before its last events), or the relay's own `on_response_prepare` signal cuts the
connection exactly while the answer's headers are being written. Both ways of serving are tried:
the test server (a hang-up surfaces as a failed write) and `relay`'s own listener (a hang-up
cancels the handler at once).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp_sse import EventSourceResponse
from loguru import logger

from relay.demo import FakeClaude
from relay.server.app import create_app
from relay.server.serve import start_serving
from tests.conftest import API_KEY, AUTH, HI, MODEL, eventually, fake_url, make_settings, session_key

MOMENTS = ("before_headers", "while_headers", "between_frames", "at_last_frame")
BODY = json.dumps({"model": MODEL, "messages": HI, "stream": True}).encode()
HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (API_KEY.encode(), len(BODY))
)


async def _cut_while_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The client is gone exactly as the stream's headers are written."""
    if isinstance(response, EventSourceResponse) and request.transport is not None:
        request.transport.abort()


@asynccontextmanager
async def _relay(fake: FakeClaude, serving: str, aiohttp_server: Any, cut_headers: bool) -> AsyncIterator[tuple[int, str]]:
    app = create_app(make_settings(fake_url(fake), sessions=session_key(1)))
    if cut_headers:
        app.on_response_prepare.append(_cut_while_headers)
    if serving == "test_server":
        server = await aiohttp_server(app)
        yield server.port, str(server.make_url("")).rstrip("/")
        return
    served = await start_serving(app, "127.0.0.1", 0, header_timeout=15, shutdown_timeout=5)
    try:
        yield served.port, f"http://127.0.0.1:{served.port}"
    finally:
        await served.close()


async def _hang_up(port: int, fake: FakeClaude, moment: str) -> None:
    """Send a streamed request and leave at `moment`; the fake's holds make the moment exact."""
    behavior = fake.behaviors[session_key(1)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + BODY)
    if moment == "before_headers":
        await eventually(lambda: len(fake.calls_named("completion")) == 1)
        writer.transport.abort()
    elif moment in ("between_frames", "at_last_frame"):
        await reader.readuntil(b"data: ")  # the first frame arrived
        writer.transport.abort()
    else:
        await reader.read()  # the relay cuts this one itself
    writer.close()
    await asyncio.sleep(0.05)  # the relay sees the hang-up before the held answer goes on
    for hold in (behavior.hold_start, behavior.hold_end):
        assert hold is not None
        hold.set()


@pytest.mark.parametrize("serving", ["test_server", "relay_serving"])
@pytest.mark.parametrize("moment", MOMENTS)
async def test_a_hang_up_at_any_moment_is_499_and_cleans_up(
    aiohttp_server: Any, fake: FakeClaude, moment: str, serving: str
) -> None:
    # Paced, so that a hang-up between frames finds the upstream stream still open.
    fake.script(session_key(1), chunk_delay=0.01, hold_start=asyncio.Event(), hold_end=asyncio.Event())
    if moment != "before_headers":
        fake.behaviors[session_key(1)].hold_start.set()  # type: ignore[union-attr]
    if moment != "at_last_frame":
        fake.behaviors[session_key(1)].hold_end.set()  # type: ignore[union-attr]
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{level} {message}")
    try:
        async with _relay(fake, serving, aiohttp_server, cut_headers=moment == "while_headers") as (port, url):
            await _hang_up(port, fake, moment)
            # The upstream stream ends (cut, or finished) and the chat is deleted, as for any hang-up.
            await eventually(lambda: fake.open_streams == 0 and len(fake.deleted) == 1 and not fake.conversations, timeout=10)
            # Hung up before the answer started: the upstream transfer was cut then, not left to
            # run (holding a connection) until claude.ai answered.
            assert fake.left_before_answer == (moment == "before_headers")
            await eventually(lambda: any("POST /v1/chat/completions 499" in line for line in lines))
            async with aiohttp.ClientSession() as http, http.get(url + "/metrics", headers=AUTH) as r:
                metrics = await r.text()
    finally:
        logger.remove(sink)
    assert not [line for line in lines if line.startswith(("ERROR", "CRITICAL"))], lines
    assert 'status="499"' in metrics and 'status="500"' not in metrics and 'status="200"' not in metrics
