"""The one place that reaches past curl_cffi's public API.

A streamed curl_cffi response keeps an asyncio.Queue, three asyncio.Events and a task for each
transfer, about 8 KB per open stream, and every network read goes through the queue and wakes its
getter; it also cannot be aborted at once (`aclose()` waits for the upstream to finish). relay
runs its streamed transfers on curl_cffi's own parts instead (the session's handle pool, option
setter, response parser and curl_multi), and shrinks the 128 KB WebSocket buffer every handle
carries. `missing_internals()` is checked at start and by a test, so a curl_cffi upgrade that
moves these parts fails loudly instead of leaking connections.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.metadata
import inspect
from contextlib import suppress
from io import BytesIO
from typing import Any

from curl_cffi import Curl, CurlError, CurlOpt
from curl_cffi.requests import AsyncSession, Headers, Response
from curl_cffi.requests.exceptions import code2error
from curl_cffi.requests.session import HttpMethod
from curl_cffi.requests.utils import set_curl_options

from ..config import ConfigError
from .pacing import UNPACED_PIECES, ReadPacer

# relay never opens WebSockets; curl_cffi zero-fills this buffer for every handle it creates.
WS_BUFFER_BYTES = 64
# libcurl's request send buffer per handle (CURLOPT_UPLOAD_BUFFERSIZE), kept for the handle's life.
SEND_BUFFER_BYTES = 32 * 1024
# Allocations from this size get a mapping of their own (glibc's M_MMAP_THRESHOLD): libcurl callocs
# the send buffer, which on the heap touches all of it, while a fresh mapping costs only the pages
# a request fills (about 4 KB per open stream saved at 1,000 streams). Network reads (16 KB at
# most) stay on the heap.
MMAP_THRESHOLD = 24 * 1024
_M_MMAP_THRESHOLD = -3
# What curl_cffi's own requests pass: the encodings curl decodes (the header itself is the
# impersonated browser's).
ACCEPT_ENCODING = "gzip, deflate, br"
_SESSION_PARTS = ("pop_curl", "release_curl", "_parse_response", "acurl")
_OPTION_NAMES = (
    *("params_list", "base_url", "json", "headers_list", "cookies_list", "auth", "timeout", "allow_redirects"),
    *("max_redirects", "proxies_list", "proxy_auth", "verify_list", "accept_encoding", "impersonate", "ja3"),
    *("akamai", "perk", "extra_fp", "default_headers", "http_version", "interface", "doh_url", "cert", "curl_options"),
)


def missing_internals() -> list[str]:
    """The private names this module relies on that the installed curl_cffi lacks."""
    missing = [] if hasattr(Curl, "_WS_RECV_BUFFER_SIZE") else ["Curl._WS_RECV_BUFFER_SIZE"]
    missing += [f"AsyncSession.{name}" for name in _SESSION_PARTS if not hasattr(AsyncSession, name)]
    accepted = inspect.signature(set_curl_options).parameters
    return missing + [f"set_curl_options({name}=)" for name in _OPTION_NAMES if name not in accepted]


def require_internals() -> None:
    """Refuse to start on a curl_cffi whose internals relay cannot use: streams would leak
    connections instead of failing loudly."""
    if missing := missing_internals():
        found = importlib.metadata.version("curl_cffi")
        raise ConfigError(f"curl_cffi {found} lacks {', '.join(missing)}; install curl-cffi>=0.16,<0.17 (see constraints.txt)")


def shrink_ws_buffer() -> None:
    """At 1,000 concurrent streams the default buffer alone would be 128 MB."""
    if getattr(Curl, "_WS_RECV_BUFFER_SIZE", 0) > WS_BUFFER_BYTES:
        Curl._WS_RECV_BUFFER_SIZE = WS_BUFFER_BYTES


def map_send_buffers() -> None:
    """Give libcurl's send buffers mappings of their own; a no-op where the C library is not glibc."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def _request_error(exc: BaseException) -> BaseException:
    """curl's error as the RequestException subclass curl_cffi's own requests raise for it."""
    if isinstance(exc, CurlError):
        error: type[BaseException] = code2error(exc.code, str(exc))  # type: ignore[arg-type]
        return error(str(exc), exc.code)
    return exc


class CurlStream:
    """One streamed transfer: status and headers once the body starts, then the body in chunks.

    curl hands each piece of the body (an HTTP/1.1 chunk, an HTTP/2 frame) to `write`, its write
    callback; what arrived while the reader was busy comes out as one chunk, so under load one
    decode pass and one client write cover many pieces. Every exit path gives the handle back to
    the session's pool exactly once.
    """

    __slots__ = (
        *("_curl", "_deadline", "_done", "_error", "_loop", "_pacer", "_parts", "_session", "_timer", "_waiter"),
        *("_unpaced", "headers", "status"),
    )

    def __init__(self, session: AsyncSession[Response], curl: Curl, pacer: ReadPacer | None) -> None:
        self._session = session
        self._curl: Curl | None = curl
        self._pacer = pacer
        self._unpaced = UNPACED_PIECES
        self._loop = asyncio.get_running_loop()
        self._parts: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: BaseException | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.status = 0
        self.headers = Headers()

    @classmethod
    async def open(
        cls,
        session: AsyncSession[Response],
        method: HttpMethod,
        url: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        pacer: ReadPacer | None = None,
    ) -> CurlStream:
        """Start the transfer; returns once the body starts (or the transfer ended without one).
        curl's failures raise curl_cffi's RequestException subclasses. `pacer` is told of the body's
        pieces once it is long."""
        curl = await session.pop_curl()
        stream = cls(session, curl, pacer)
        try:
            header_buffer = stream._configure(method, url, json, headers)
            session.acurl.add_handle(curl).add_done_callback(stream._ended)
        except BaseException:
            session.release_curl(curl)
            raise
        try:
            while not stream._parts and not stream._done:
                await stream._wait()
            if not stream._parts and stream._error is not None:
                raise stream._error
            rsp = session._parse_response(curl, BytesIO(), header_buffer, "utf-8", False)
        except BaseException:
            stream.abort()
            raise
        stream.status, stream.headers = rsp.status_code, rsp.headers
        if stream._done:
            stream._release()
        return stream

    def _configure(self, method: HttpMethod, url: str, json: Any, headers: dict[str, str] | None) -> BytesIO:
        s, curl = self._session, self._curl
        assert curl is not None
        # Set up as a buffered request, then the body goes to `write` instead of the buffer.
        _, _, header_buffer, *_ = set_curl_options(
            curl, method, url, params_list=[s.params, None], base_url=s.base_url, json=json,
            headers_list=[s.headers, headers], cookies_list=[s.cookies, None], auth=s.auth, timeout=s.timeout,
            allow_redirects=s.allow_redirects, max_redirects=s.max_redirects, proxies_list=[s.proxies, None],
            proxy_auth=s.proxy_auth, verify_list=[s.verify, None], accept_encoding=ACCEPT_ENCODING,
            impersonate=s.impersonate, ja3=s.ja3, akamai=s.akamai, perk=s.perk, extra_fp=s.extra_fp,
            default_headers=s.default_headers, http_version=s.http_version, interface=s.interface,
            doh_url=s.doh_url, cert=s.cert, curl_options=s.curl_options,
        )  # fmt: skip
        curl.setopt(CurlOpt.WRITEDATA, self)
        buffer: BytesIO = header_buffer
        return buffer

    def write(self, chunk: bytes) -> None:
        """curl's write callback: one piece of the body."""
        self._parts.append(chunk)
        self._wake()
        if self._pacer is not None:
            if self._unpaced:
                self._unpaced -= 1
            else:
                self._pacer.note()

    def _ended(self, future: asyncio.Future[None]) -> None:
        self._done = True
        if not future.cancelled() and (exc := future.exception()) is not None:
            self._error = _request_error(exc)
        if self.status:
            self._release()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    async def read(self, idle: float) -> bytes:
        """The body's next chunk, b"" at its end. Raises TimeoutError after `idle` seconds of waiting
        without data (curl's own low-speed check averages over several seconds, so it notices a
        stall mid-answer late)."""
        while not (parts := self._parts):
            if self._done:
                if self._error is not None:
                    raise self._error
                return b""
            self._deadline = self._loop.time() + idle
            if self._timer is None:
                self._timer = self._loop.call_at(self._deadline, self._check_idle)
            await self._wait()
            if self._deadline == 0.0:
                raise TimeoutError
        self._parts = []
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _check_idle(self) -> None:
        """One timer per stream, re-armed only when it fires: no timer churn per network read."""
        self._timer = None
        if self._waiter is None:
            return  # not waiting for the upstream; the next wait arms it again
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._check_idle)
            return
        self._deadline = 0.0
        self._wake()

    async def finish(self, wait: float) -> None:
        """Let the end of the body arrive (so the connection goes back to the pool), then abort."""
        with suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while not self._done:
                    self._parts.clear()
                    await self._wait()
        self.abort()

    def abort(self) -> None:
        """Stop the transfer now: taking the handle out of curl's multi closes its connection."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._release()

    def _release(self) -> None:
        curl, self._curl = self._curl, None
        if curl is not None:
            self._session.release_curl(curl)
