"""Runs chat jobs on the pool (or on a caller's own key in mirror mode): a plain failover loop that
returns an answer once one has started, and the background work the pool needs."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

from loguru import logger

from ..claude.client import AccountApi, UpstreamClient
from ..claude.failures import Failure, UpstreamFailure
from ..claude.prompt import RemoteImage, Upload
from ..config import SessionSpec, Settings
from ..conversation import Chat
from ..metrics import Metrics
from ..pool.account import Account
from ..pool.pool import AccountPool
from ..reply import ReplyEvent
from .answer import ChatAnswer
from .completion import ChatRecord, start_completion
from .deletion import delete_chat
from .filters import find_tool_calls, first_part, watch_limits
from .job import ChatJob, build_job, resolve_model
from .orgs import OrgDiscovery
from .seats import Failures, GuestSource, PoolSource, Seat, Source
from .usage import UsagePoller

# Failures after which the account cannot be asked for anything, a delete included.
UNREACHABLE = frozenset({Failure.INVALID, Failure.DISABLED, Failure.CLOUDFLARE, Failure.REGION})

FetchImage = Callable[[RemoteImage], Awaitable[Upload]]


class ChatService:
    """The pool's request path and its housekeeping; built with everything it uses."""

    def __init__(
        self, upstream: UpstreamClient, pool: AccountPool, settings: Settings, *, metrics: Metrics, fetch_image: FetchImage
    ) -> None:
        self.upstream = upstream
        self.pool = pool
        self.settings = settings
        self.metrics = metrics
        self.orgs = OrgDiscovery()
        self.usage = UsagePoller(pool, self.api, settings.usage_refresh)
        self._fetch_image = fetch_image
        self._background: set[asyncio.Task[None]] = set()

    def api(self, account: Account) -> AccountApi:
        """claude.ai calls as a pooled account, through its own proxy when it has one."""
        return self.upstream.for_key(account.key, proxy=account.proxy)

    def resolve_model(self, name: str) -> tuple[str, bool]:
        return resolve_model(self.settings, name)

    def job(self, chat: Chat) -> ChatJob:
        return build_job(self.settings, chat)

    # -- background work -----------------------------------------------------------------------

    def discover_orgs(self) -> None:
        """Find the organization of every account that lacks one, in the background, so no user
        request waits for it (at start, and after accounts are reloaded or added)."""
        source = self._pool_source()
        for account in self.pool.accounts:
            if account.org_id is None and account.usable(self.pool.now()):
                self.spawn(self._discover(source, Seat(account, self.api(account))))

    async def _discover(self, source: PoolSource, seat: Seat) -> None:
        try:
            await source.org(seat)
        except UpstreamFailure as failure:
            self.metrics.upstream_errors.labels(failure.kind.value).inc()
            await source.learn(seat, failure)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run housekeeping in the background; shutdown gives it a moment to finish."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop reading usage; let pending chat deletions finish (briefly), then cancel what is left."""
        await self.usage.stop()
        if self._background:
            _, pending = await asyncio.wait(set(self._background), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- the request path ----------------------------------------------------------------------

    def _pool_source(self, model: str | None = None) -> PoolSource:
        return PoolSource(self.pool, self.orgs, self.api, max_retries=self.settings.max_retries, model=model)

    async def start(self, job: ChatJob, *, guest: SessionSpec | None = None, buffered: bool = False) -> ChatAnswer:
        """An answer that has started, failing over between accounts until one starts.

        With `buffered` the whole answer is read before it is returned, so any failure can still
        move to another account. Otherwise only failures before the first content may; later ones
        come out of `ChatAnswer.batches()` for the caller to report in-band.
        """
        uploads = await self._fetch_remote(job)
        source: Source = GuestSource(guest, self.upstream, self.orgs) if guest else self._pool_source(job.model)
        tried: set[Account] = set()
        failures: Failures = []
        for attempt in range(1, source.attempts + 1):
            seat = await source.take(tried, failures)
            if failures:
                self.metrics.failovers.labels(failures[-1][1].kind.value).inc()
            tried.add(seat.account)
            stack = AsyncExitStack()
            try:
                return await self._attempt(stack, source, seat, job, uploads, buffered, attempt)
            except UpstreamFailure as failure:
                await stack.aclose()
                await self._failed(source, seat, failure)
                failures.append((seat.account, failure))
            except BaseException:
                await stack.aclose()
                raise
        raise source.exhausted(failures)

    async def _failed(self, source: Source, seat: Seat, failure: UpstreamFailure) -> None:
        """An attempt failed before its answer started: learn, then give up or let the loop go on."""
        await self._learn(source, seat, failure)
        retry = "attempt" if failure.retryable else "request"
        logger.info("{} failed on {}: {}", retry, seat.account.alias, failure)
        if not failure.retryable:
            raise source.give_up(failure) from None

    async def _learn(self, source: Source, seat: Seat, failure: UpstreamFailure) -> None:
        self.metrics.upstream_errors.labels(failure.kind.value).inc()
        await source.learn(seat, failure)

    async def _attempt(
        self, stack: AsyncExitStack, source: Source, seat: Seat, job: ChatJob, uploads: list[Upload], buffered: bool, attempt: int
    ) -> ChatAnswer:
        """One account's try; everything it holds is on `stack`, closed when the answer is."""
        stack.push_async_callback(source.give_back, seat)
        chat = ChatRecord(str(uuid.uuid4()))
        org = await source.org(seat)
        if self.settings.chat_delete:
            stack.callback(self._delete_later, seat, org, chat)
        try:
            batches = await self._answer_events(stack, source, seat, org, chat, job, uploads)
            head, more = await first_part(batches, buffered)
        except UpstreamFailure as failure:
            chat.unreachable = failure.kind in UNREACHABLE  # nothing was created, and it could not be deleted anyway
            raise
        await source.succeeded(seat)

        async def on_failure(failure: UpstreamFailure) -> None:
            await self._learn(source, seat, failure)

        return ChatAnswer(seat.account.alias, head, batches if more else None, attempt, on_failure, stack)

    async def _answer_events(
        self, stack: AsyncExitStack, source: Source, seat: Seat, org: str, chat: ChatRecord, job: ChatJob, uploads: list[Upload]
    ) -> AsyncGenerator[list[ReplyEvent], None]:
        """Uploads (concurrently), then the completion, its quota notices taken out and its tool calls found."""
        api = seat.api
        files = list(await asyncio.gather(*(api.upload(org, u.filename, u.content_type, u.data) for u in uploads)))
        temporary = self.settings.temporary_chats
        events = await start_completion(
            stack, seat, org, chat, job, files, temporary=temporary, learned=functools.partial(source.learned, seat)
        )
        watched = watch_limits(events, source, seat)
        stack.push_async_callback(watched.aclose)
        if job.tools is None:
            return watched
        found = find_tool_calls(watched, job.tools)
        stack.push_async_callback(found.aclose)
        return found

    def _delete_later(self, seat: Seat, org: str, chat: ChatRecord) -> None:
        if not chat.unreachable:
            self.spawn(delete_chat(seat.api, seat.account.alias, org, chat, self.metrics))

    async def _fetch_remote(self, job: ChatJob) -> list[Upload]:
        """Fetch http(s) images once per request (all at once), before any account is used."""

        async def one(item: Upload | RemoteImage) -> Upload:
            return item if isinstance(item, Upload) else await self._fetch_image(item)

        return list(await asyncio.gather(*(one(f) for f in job.prompt.files)))
