"""HTTP calls to claude.ai over curl_cffi with browser TLS impersonation; the only curl_cffi importer."""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from curl_cffi import CurlMime, CurlOpt
from curl_cffi.requests import AsyncSession, Headers, Response
from curl_cffi.requests.exceptions import RequestException, Timeout
from loguru import logger

from ..config import Settings
from ..reply import ReplyEvent, Window
from ..sse import SSEDecoder
from . import curl, webapi
from .curl import CurlStream
from .events import EventReader
from .failures import Failure, UpstreamFailure, classify
from .pacing import ReadPacer

# Impersonate the newest Chrome profile curl_cffi ships; claude.ai sits behind Cloudflare.
IMPERSONATE = "chrome"
# After a complete answer, how long to wait for the end of the body before closing the connection.
END_OF_BODY_WAIT = 2.0
# Error bodies are read to classify them; an HTML challenge page is small, anything bigger is cut.
MAX_ERROR_BODY = 256 * 1024


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    base_url: str
    proxy: str | None
    connect_timeout: float
    read_timeout: float
    max_connections: int
    # How often, at most, upstream reads are handled while answers stream fast (0: at every read).
    read_interval: float = 0.0
    # Sessions for callers' own keys (mirror mode) are kept in a bounded LRU.
    max_guest_sessions: int = 32


def upstream_client(settings: Settings) -> UpstreamClient:
    """The client the settings describe, once curl_cffi is known to have what relay relies on."""
    curl.require_internals()
    curl.shrink_ws_buffer()
    curl.map_send_buffers()
    return UpstreamClient(
        UpstreamConfig(
            base_url=settings.claude_base_url,
            proxy=settings.proxy,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_connections=settings.upstream_max_connections,
            read_interval=settings.upstream_read_interval,
        )
    )


@dataclass(frozen=True, slots=True)
class CallResult:
    """A small claude.ai answer read whole: JSON calls and their error bodies."""

    status: int
    headers: dict[str, str]
    body: bytes


def _network_failure(exc: RequestException) -> UpstreamFailure:
    # curl messages name only the URL and the curl error; no credentials are in either.
    if isinstance(exc, Timeout):
        return UpstreamFailure(Failure.TIMEOUT, f"connection to claude.ai timed out: {str(exc)[:160]}")
    return UpstreamFailure(Failure.TRANSIENT, f"connection to claude.ai failed: {str(exc)[:160]}")


@dataclass(slots=True)
class _Guest:
    session: AsyncSession[Response]
    users: int = 0


class FetchError(Exception):
    """A public URL could not be fetched (status, size or network); the message says which."""


class Redirected(Exception):
    """A public URL answered with a redirect to `location`."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class UpstreamClient:
    """One pooled curl_cffi session per account key: connections and TLS are reused across requests."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._sessions: dict[str, AsyncSession[Response]] = {}
        self._guests: OrderedDict[str, _Guest] = OrderedDict()
        self._headers = webapi.base_headers(config.base_url)
        self._public: AsyncSession[Response] | None = None
        self._pacer = ReadPacer(config.read_interval)

    def _new_session(self, extra: dict[CurlOpt, Any] | None = None, proxy: str | None = None) -> AsyncSession[Response]:
        return AsyncSession(
            impersonate=IMPERSONATE,
            proxy=proxy or self.config.proxy,
            allow_redirects=False,
            # Each limit is set where it means what its setting says: connecting here, the rest per
            # call (`_call`, `completion`). curl_cffi's (connect, read) pair would turn READ_TIMEOUT
            # into curl's low-speed check, which averages over seconds and notices silence late.
            timeout=None,  # type: ignore[arg-type]  # curl_cffi takes None for "no limit of its own"
            max_clients=self.config.max_connections,
            trust_env=False,
            curl_options={
                CurlOpt.CONNECTTIMEOUT_MS: int(self.config.connect_timeout * 1000),
                # A backstop that frees the connection: relay's own timers give up on a silent
                # upstream at READ_TIMEOUT, but a transfer cut off before its headers would stay in
                # curl (and hold a connection slot) for good; curl ends any transfer that receives
                # nothing for a second longer.
                CurlOpt.LOW_SPEED_LIMIT: 1,
                CurlOpt.LOW_SPEED_TIME: math.ceil(self.config.read_timeout) + 1,
                # Half libcurl's default, and mapped so that only what a request fills is resident.
                CurlOpt.UPLOAD_BUFFERSIZE: curl.SEND_BUFFER_BYTES,
                # Else curl swaps the SIGPIPE handler at every socket action (two system calls per
                # read); Python ignores SIGPIPE, and the threaded resolver times out without signals.
                CurlOpt.NOSIGNAL: 1,
                **(extra or {}),
            },
        )

    @asynccontextmanager
    async def _session(self, key: str, guest: bool, proxy: str | None = None) -> AsyncIterator[AsyncSession[Response]]:
        """The pooled session for a key (and its own proxy), held for one call. Guest (mirror) keys
        live in a bounded LRU whose idle entries are closed when it overflows; a session in use is
        never closed."""
        if not guest:
            pooled = f"{key}@{proxy}" if proxy else key
            if pooled not in self._sessions:
                self._sessions[pooled] = self._new_session(proxy=proxy)
            yield self._sessions[pooled]
            return
        entry = self._guests.get(key)
        if entry is None:
            entry = self._guests[key] = _Guest(self._new_session())
        self._guests.move_to_end(key)
        entry.users += 1
        try:
            yield entry.session
        finally:
            entry.users -= 1
            self._trim_guests()

    def _trim_guests(self) -> None:
        excess = len(self._guests) - self.config.max_guest_sessions
        for key in [k for k, g in self._guests.items() if g.users == 0][: max(0, excess)]:
            asyncio.get_running_loop().create_task(self._guests.pop(key).session.close())

    def _request_headers(self, key: str, referer: str | None = None) -> dict[str, str]:
        headers = dict(self._headers)
        headers["Cookie"] = f"sessionKey={key}"
        if referer:
            headers["Referer"] = self.config.base_url + referer
        return headers

    async def _call(
        self,
        key: str,
        method: str,
        path: str,
        *,
        guest: bool = False,
        proxy: str | None = None,
        json: Any = None,
        multipart: CurlMime | None = None,
        referer: str | None = None,
    ) -> CallResult:
        headers = self._request_headers(key, referer)
        try:
            async with self._session(key, guest, proxy) as session:
                rsp = await session.request(
                    method,  # type: ignore[arg-type]
                    self.config.base_url + path,
                    json=json,
                    multipart=multipart,
                    headers=headers,
                    timeout=self.config.connect_timeout + self.config.read_timeout,  # small answers: a total
                )
        except RequestException as exc:
            raise _network_failure(exc) from exc
        body = rsp.content[:MAX_ERROR_BODY] if rsp.status_code >= 300 else rsp.content
        return CallResult(rsp.status_code, _headers(rsp.headers), body)

    def for_key(self, key: str, *, guest: bool = False, proxy: str | None = None) -> AccountApi:
        """claude.ai calls with one cookie: a pooled account's (through its own proxy, if it has
        one), or a caller's own (mirror mode)."""
        return AccountApi(self, key, guest, proxy)

    async def fetch_public(self, url: str, max_bytes: int, *, address: str | None = None) -> tuple[str, bytes]:
        """GET a URL a caller linked (an image), through PROXY, refusing more than `max_bytes`.

        With `address`, the connection goes to that address whatever the name resolves to now
        (the caller checked it). Redirects are not followed here: a 3xx raises Redirected so the
        caller can check the target.
        """
        pinned = None
        if address is not None:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            shown = f"[{address}]" if ":" in address else address
            pinned = self._new_session({CurlOpt.RESOLVE: [f"{parts.hostname}:{port}:{shown}"]})
        elif self._public is None:
            self._public = self._new_session()
        session = pinned or self._public
        assert session is not None
        try:
            try:
                stream = await CurlStream.open(session, "GET", url)
            except RequestException as exc:
                raise FetchError(f"could not fetch it: {str(exc)[:160]}") from exc
            return await self._read_public(url, stream, max_bytes, self.config.read_timeout)
        finally:
            if pinned is not None:
                await pinned.close()

    @staticmethod
    async def _read_public(url: str, stream: CurlStream, max_bytes: int, idle: float) -> tuple[str, bytes]:
        try:
            if 300 <= stream.status < 400 and stream.headers.get("location"):
                raise Redirected(urljoin(url, stream.headers["location"] or ""))
            if stream.status != 200:
                raise FetchError(f"fetching it answered HTTP {stream.status}")
            chunks: list[bytes] = []
            size = 0
            while chunk := await stream.read(idle):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"it is larger than {max_bytes} bytes")
                chunks.append(chunk)
            return stream.headers.get("content-type") or "", b"".join(chunks)
        except RequestException as exc:
            raise FetchError(f"could not fetch it: {str(exc)[:160]}") from exc
        finally:
            stream.abort()

    async def close(self) -> None:
        sessions = [
            *self._sessions.values(),
            *(g.session for g in self._guests.values()),
            *([self._public] if self._public else []),
        ]
        self._sessions.clear()
        self._guests.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


def _headers(headers: Headers) -> dict[str, str]:
    return {k: v or "" for k, v in headers.items()}


async def _read_capped(stream: CurlStream, idle: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        while size < MAX_ERROR_BODY and (chunk := await stream.read(idle)):
            chunks.append(chunk)
            size += len(chunk)
    except (RequestException, TimeoutError) as exc:
        logger.debug("error body cut short: {!r}", exc)
    return b"".join(chunks)[:MAX_ERROR_BODY]


class _EventStream:
    """Decodes one completion response; knows whether the answer was complete."""

    __slots__ = ("curl", "idle", "reader")

    def __init__(self, stream: CurlStream, idle: float) -> None:
        self.curl = stream
        self.reader = EventReader()
        self.idle = idle

    async def batches(self) -> AsyncGenerator[list[ReplyEvent], None]:
        decoder = SSEDecoder()
        reader = self.reader
        try:
            while chunk := await self.curl.read(self.idle):
                if batch := reader.read(decoder.take(chunk)):
                    yield batch
        except RequestException as exc:
            raise _network_failure(exc) from exc
        except TimeoutError:
            raise UpstreamFailure(Failure.TIMEOUT, f"claude.ai sent nothing for {self.idle:g} s (READ_TIMEOUT)") from None
        if batch := reader.feed_all(decoder.flush()):
            yield batch
        if not self.reader.finished:
            raise UpstreamFailure(Failure.TRANSIENT, "claude.ai closed the stream before the answer was complete")

    async def close(self) -> None:
        if self.reader.finished:
            # The answer is complete and only the end of the body is left: let it arrive so the
            # connection goes back to the pool instead of being torn down.
            await self.curl.finish(END_OF_BODY_WAIT)
        else:
            self.curl.abort()


class AccountApi:
    """The claude.ai calls relay makes, bound to one cookie and its pooled session."""

    __slots__ = ("_client", "_guest", "_key", "_proxy")

    def __init__(self, client: UpstreamClient, key: str, guest: bool, proxy: str | None) -> None:
        self._client = client
        self._key = key
        self._guest = guest
        self._proxy = proxy

    async def _call(self, method: str, path: str, **kw: Any) -> CallResult:
        return await self._client._call(self._key, method, path, guest=self._guest, proxy=self._proxy, **kw)

    @staticmethod
    def _expect(answer: CallResult, *ok: int) -> CallResult:
        if answer.status not in ok:
            raise classify(answer.status, answer.headers, answer.body)
        return answer

    async def discover_org(self) -> str:
        return str((await self.organization())["uuid"])

    async def organization(self) -> dict[str, Any]:
        """The organization relay chats through, as claude.ai describes it."""
        answer = await self._call("GET", webapi.orgs_path())
        return webapi.choose_org(answer.status, answer.headers, answer.body)

    async def usage(self, org: str) -> dict[str, Window]:
        """The account's quota windows as /usage reports them."""
        answer = await self._call("GET", webapi.usage_path(org))
        return webapi.usage_windows(answer.status, answer.headers, answer.body)

    async def create_conversation(self, org: str, conv: str, model: str | None, temporary: bool = False) -> None:
        body = webapi.conversation_body(conv, model, temporary)
        self._expect(await self._call("POST", webapi.conversations_path(org), json=body), 200, 201)

    async def enable_thinking(self, org: str, conv: str) -> None:
        path = webapi.conversation_path(org, conv)
        self._expect(await self._call("PUT", path, json=webapi.thinking_settings_body(), referer=f"/chat/{conv}"), 200, 202, 204)

    async def upload(self, org: str, filename: str, content_type: str, data: bytes) -> str:
        mime = CurlMime()
        mime.addpart(name="file", filename=filename, content_type=content_type, data=data)
        try:
            answer = self._expect(await self._call("POST", webapi.upload_path(org), multipart=mime), 200, 201)
        finally:
            mime.close()
        return webapi.uploaded_file_id(answer.body)

    async def delete_conversation(self, org: str, conv: str) -> bool:
        """Delete a chat; False when claude.ai does not know it (404)."""
        path = webapi.conversation_path(org, conv)
        return self._expect(await self._call("DELETE", path, referer=f"/chat/{conv}"), 200, 202, 204, 404).status != 404

    @asynccontextmanager
    async def completion(self, org: str, conv: str, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[list[ReplyEvent]]]:
        """Start a completion; yields its reply events in batches, one per network read.

        Leaving the block early closes the upstream connection at once; after a complete answer
        the connection is kept for the next request.
        """
        client = self._client
        headers = client._request_headers(self._key, f"/chat/{conv}")
        headers["Accept"] = "text/event-stream"
        config = client.config
        async with client._session(self._key, self._guest, self._proxy) as session:
            try:
                # Until the answer starts: the connection, then READ_TIMEOUT of silence at most.
                async with asyncio.timeout(config.connect_timeout + config.read_timeout):
                    url = config.base_url + webapi.completion_path(org, conv)
                    stream = await CurlStream.open(session, "POST", url, json=body, headers=headers, pacer=client._pacer)
            except RequestException as exc:
                raise _network_failure(exc) from exc
            except TimeoutError:
                raise UpstreamFailure(Failure.TIMEOUT, "claude.ai did not start answering in time (READ_TIMEOUT)") from None
            events = _EventStream(stream, config.read_timeout)
            batches = events.batches()
            try:
                if stream.status != 200 or "text/event-stream" not in (stream.headers.get("content-type") or ""):
                    raw = await _read_capped(stream, config.read_timeout)
                    raise classify(stream.status if stream.status != 200 else 502, _headers(stream.headers), raw)
                yield batches
            finally:
                await batches.aclose()
                await events.close()
