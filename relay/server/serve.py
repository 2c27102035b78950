"""Serving the app on a socket: what `web.run_app` does, plus two guards aiohttp lacks.

- A client gets REQUEST_HEADER_TIMEOUT seconds, from connecting or from the end of its last
  answer, to send a complete request head; slow or idle connections are closed after that, so
  nobody can hold file descriptors by trickling bytes (the body has its own limit in the routes).
- Errors aiohttp answers before any handler runs (oversized headers, broken chunked encoding,
  garbage instead of HTTP) come back as JSON in the OpenAI error shape, not as plain text.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestHandler
from loguru import logger

from ..errors import InvalidRequest, PayloadTooLarge, RelayError

# Options for every connection handler: the app carries them (`handler_args`, which any AppRunner
# applies) and relay's own protocol factory gives them too. aiohttp's access log is off because the
# error middleware writes one line per request; bodies are inflated by `body.read_json`, capped.
HANDLER_OPTIONS: dict[str, Any] = {"access_log": None, "auto_decompress": False}
# How often idle connections are looked at; a slow client may keep one up to this much longer.
SWEEP_INTERVAL = 1.0


class ConnectionGuard:
    """Closes connections that have not sent a complete request head in time."""

    def __init__(self, header_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.header_timeout = header_timeout
        self._clock = clock
        self._busy: set[RequestHandler] = set()
        self._idle_since: dict[RequestHandler, float] = {}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A request head arrived: the connection is busy until its answer is written."""
        protocol = request.protocol
        self._busy.add(protocol)
        try:
            return await handler(request)
        finally:
            self._busy.discard(protocol)
            self._idle_since[protocol] = self._clock()

    def sweep(self, connections: list[RequestHandler]) -> int:
        """Close what waited too long for a request head; returns how many were closed."""
        now = self._clock()
        live = set(connections)
        for gone in self._idle_since.keys() - live:
            del self._idle_since[gone]
        closed = 0
        for protocol in live - self._busy:
            since = self._idle_since.setdefault(protocol, now)
            if now - since > self.header_timeout:
                protocol.force_close()
                del self._idle_since[protocol]
                closed += 1
        return closed

    async def run(self, server: web.Server) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            if closed := self.sweep(server.connections):
                logger.debug("closed {} connection(s) that sent no request in time", closed)


class JsonErrorsHandler(RequestHandler):
    """aiohttp's connection handler, answering protocol-level errors in relay's JSON error shape."""

    __slots__ = ()

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started; the connection is closed instead")
        # aiohttp's own message quotes the offending bytes (a header may hold a secret): name the
        # kind of problem only.
        detail = exc.__class__.__name__ if exc is not None else "unknown"
        if status == 500:
            logger.opt(exception=exc).error("error serving a request from {}", request.remote)
            error: RelayError = RelayError("internal error; see the relay's log")
        elif status == 413:
            error = PayloadTooLarge("request is too large (see MAX_BODY_SIZE)")
        else:
            logger.info("refused a malformed request from {}: {} {}", request.remote, status, detail)
            error = InvalidRequest(f"malformed HTTP request ({detail})")
        body = error.body()
        if status not in (400, 413, 500):
            body["error"]["code"] = f"http_{status}"
        response = web.json_response(body, status=status)
        response.force_close()
        return response


@dataclass
class Serving:
    """A running listener; `close()` stops accepting, then shuts the app down gracefully."""

    runner: web.AppRunner
    listener: asyncio.Server
    sweeper: asyncio.Task[None]

    @property
    def port(self) -> int:
        return int(self.listener.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self.listener.close()
        self.sweeper.cancel()
        await self.runner.cleanup()


async def start_serving(app: web.Application, host: str, port: int, *, header_timeout: float, shutdown_timeout: float) -> Serving:
    """Listen on host:port (0 picks a free port) with relay's guards."""
    # A client that hangs up cancels its handler at once (and so its upstream request).
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=shutdown_timeout)
    guard = ConnectionGuard(header_timeout)
    app.middlewares.insert(0, guard.middleware)
    await runner.setup()
    server = runner.server
    assert server is not None
    loop = asyncio.get_running_loop()

    def protocol() -> RequestHandler:
        # The same options AppRunner gives the connection handlers it would build itself.
        return JsonErrorsHandler(server, loop=loop, access_log_class=AccessLogger, **HANDLER_OPTIONS)

    # "::" means every address on both stacks (asyncio would otherwise bind IPv6 only).
    listener = await loop.create_server(protocol, None if host in ("", "::") else host, port, reuse_address=True)
    return Serving(runner, listener, asyncio.create_task(guard.run(server)))


async def serve(app: web.Application, host: str, port: int, *, header_timeout: float, shutdown_timeout: float) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully (live streams get their grace)."""
    serving = await start_serving(app, host, port, header_timeout=header_timeout, shutdown_timeout=shutdown_timeout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await serving.close()
