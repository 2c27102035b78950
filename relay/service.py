"""One chat request against claude.ai: account choice, failover before the first byte, cleanup after."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from .claude import webapi
from .pool.account import Account
from .pool.pool import AccountPool
from .config import SessionSpec
from .errors import AuthError, InvalidRequest, RateLimited, RelayError, UpstreamError, UpstreamTimeout
from .claude.failures import Failure, UpstreamFailure
from .metrics import Metrics
from .claude.prompt import Prompt, RemoteImage, Upload
from .reply import Finish, LimitReached, ReplyEvent, Text, Thinking, ToolCall
from .pool.state import Lease
from .claude.tools import ToolCallParser, ToolPlan
from .claude.client import UpstreamClient

# Deleting a chat is housekeeping: a few tries spaced out, never on the answer's critical path.
DELETE_ATTEMPTS = 3
DELETE_BACKOFF = 1.0
# Failures after which the account cannot be asked for anything, a delete included.
UNREACHABLE = frozenset({Failure.INVALID, Failure.DISABLED, Failure.CLOUDFLARE, Failure.REGION})
# Mirror keys get cached org ids too, but a bounded number of them.
MAX_GUEST_ORGS = 256


@dataclass(slots=True)
class ChatJob:
    """What to ask claude.ai, independent of the client API that asked."""

    model: str
    thinking: bool
    prompt: Prompt
    artifacts: bool = True
    tools: ToolPlan | None = None


@dataclass(slots=True)
class Reply:
    """An answer whose first part has arrived; iterate for the rest. `account` is the one that served."""

    account: Account
    head: list[ReplyEvent]
    rest: AsyncIterator[list[ReplyEvent]] | None  # an async generator; closed by its owner
    attempts: int
    first_byte_at: float = field(default_factory=time.monotonic)

    async def batches(self) -> AsyncGenerator[list[ReplyEvent], None]:
        """The answer in batches of events, the head first."""
        yield self.head
        if self.rest is not None:
            async for batch in self.rest:
                yield batch


FetchImage = Callable[[RemoteImage], Awaitable[Upload]]


class ChatService:
    """Runs chat jobs on the pool (or on a caller's own key in mirror mode)."""

    def __init__(
        self,
        upstream: UpstreamClient,
        pool: AccountPool,
        *,
        attempts: int,
        chat_delete: bool,
        metrics: Metrics,
        fetch_image: FetchImage,
    ) -> None:
        self.upstream = upstream
        self.pool = pool
        self.metrics = metrics
        self.attempts = attempts
        self.chat_delete = chat_delete
        self._fetch_image = fetch_image
        self._background: set[asyncio.Task[None]] = set()
        self._discovering: dict[str, asyncio.Future[str]] = {}
        self._guest_orgs: OrderedDict[str, str] = OrderedDict()

    # -- lifecycle ---------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Find every account's organization in the background so no user request waits for it."""
        for account in self.pool.accounts:
            if account.org_id is None and account.usable(time.time()):
                self._spawn(self._warm(account))

    async def _warm(self, account: Account) -> None:
        try:
            await self._org(account, guest=False)
        except UpstreamFailure as failure:
            self.metrics.upstream_errors.labels(failure.kind.value).inc()
            await self.pool.record_failure(account, failure)

    async def close(self, timeout: float = 5.0) -> None:
        """Let pending chat deletions finish (briefly), then cancel what is left."""
        if self._background:
            _, pending = await asyncio.wait(set(self._background), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the request path ----------------------------------------------------------------------

    @asynccontextmanager
    async def open(
        self, job: ChatJob, *, guest: SessionSpec | None = None, buffered: bool = False
    ) -> AsyncIterator[Reply]:
        """An answer that has started, failing over between accounts until one starts.

        With `buffered` the whole answer is read before it is handed out, so any failure can still
        move to another account. Otherwise only failures before the first content may; later ones
        propagate out of `Reply.events()` for the caller to report in-band.
        """
        uploads = await self._fetch_remote(job.prompt)
        mirror = Account(key=guest.key.get_secret_value(), alias="mirror", org_id=guest.org_id) if guest else None
        attempts = 1 if mirror else self.attempts
        tried: set[Account] = set()
        failures: list[tuple[Account, UpstreamFailure]] = []
        for attempt in range(1, attempts + 1):
            lease = None if mirror else await self._acquire(tried, failures)
            account = lease.account if lease else mirror
            assert account is not None
            if failures:
                self.metrics.failovers.labels(failures[-1][1].kind.value).inc()
            tried.add(account)
            conv = str(uuid.uuid4())
            org: str | None = None
            started = False
            try:
                org = await self._org(account, guest=mirror is not None)
                async with self._converse(account, org, conv, job, uploads, mirror is not None) as events:
                    head, rest = await self._first_part(events, buffered)
                    started = True
                    yield Reply(account, head, rest, attempt)
                return
            except UpstreamFailure as failure:
                self.metrics.upstream_errors.labels(failure.kind.value).inc()
                if started:
                    raise
                if mirror is None:
                    await self.pool.record_failure(account, failure)
                failures.append((account, failure))
                if failure.kind in UNREACHABLE:
                    org = None  # nothing was created, and the account could not delete it anyway
                logger.info("{} failed on {}: {}", "attempt" if failure.retryable else "request", account.alias, failure)
                if mirror or not failure.retryable:
                    raise _client_error(failure, guest=mirror is not None) from None
            finally:
                if lease is not None:
                    await self.pool.release(lease)
                if org is not None and self.chat_delete:
                    self._spawn(self._delete(account, org, conv, mirror is not None))
        raise self._exhausted(failures)

    async def _acquire(self, tried: set[Account], failures: list[tuple[Account, UpstreamFailure]]) -> Lease:
        try:
            return await self.pool.acquire(exclude=tried)
        except RelayError:
            raise self._exhausted(failures) from None

    def _exhausted(self, failures: list[tuple[Account, UpstreamFailure]]) -> RelayError:
        """The error when no attempt succeeded: the pool's own story, or what each attempt met."""
        if not any(a.usable(time.time()) for a in self.pool.accounts) or not failures:
            return self.pool.unavailable()
        if all(f.kind is Failure.RATE_LIMITED for _, f in failures):
            # Limits that reset within the second still mean "later", not a broken upstream.
            return _client_error(min(failures, key=lambda af: af[1].resets_at or 0)[1], guest=False)
        detail = "; ".join(f"{a.alias}: {f.message}" for a, f in failures)
        last = failures[-1][1]
        if last.message.startswith("connection to claude.ai timed out"):
            return UpstreamTimeout(f"claude.ai did not answer ({detail})")
        return UpstreamError(f"claude.ai failed on {len(failures)} attempt(s): {detail}")

    async def _org(self, account: Account, *, guest: bool) -> str:
        """The account's organization id, discovered once and shared by concurrent requests."""
        if account.org_id:
            return account.org_id
        if guest and (cached := self._guest_orgs.get(account.key)):
            self._guest_orgs.move_to_end(account.key)
            return cached
        pending = self._discovering.get(account.key)
        if pending is None:
            pending = asyncio.ensure_future(self.upstream.discover_org(account.key, guest=guest))
            self._discovering[account.key] = pending
            pending.add_done_callback(lambda _: self._discovering.pop(account.key, None))
        org = await asyncio.shield(pending)
        if guest:
            self._guest_orgs[account.key] = org
            while len(self._guest_orgs) > MAX_GUEST_ORGS:
                self._guest_orgs.popitem(last=False)
        else:
            account.org_id = org
            await self.pool.save_org(account)
        return org

    async def _fetch_remote(self, prompt: Prompt) -> list[Upload]:
        """Fetch http(s) images once per request (all at once), before any account is used."""

        async def one(item: Upload | RemoteImage) -> Upload:
            return item if isinstance(item, Upload) else await self._fetch_image(item)

        return list(await asyncio.gather(*(one(f) for f in prompt.files)))

    @asynccontextmanager
    async def _converse(
        self, account: Account, org: str, conv: str, job: ChatJob, uploads: list[Upload], guest: bool
    ) -> AsyncIterator[AsyncIterator[list[ReplyEvent]]]:
        """Uploads (concurrently), then the completion; the chat is created on the way when possible."""
        key = account.key
        files = list(
            await asyncio.gather(
                *(self.upstream.upload(key, org, u.filename, u.content_type, u.data, guest=guest) for u in uploads)
            )
        )
        async with AsyncExitStack() as stack:
            events = self._watch_limits(await self._start_completion(stack, account, org, conv, job, files, guest), account)
            yield _find_tool_calls(events, job.tools) if job.tools and job.tools.active else events

    async def _start_completion(
        self, stack: AsyncExitStack, account: Account, org: str, conv: str, job: ChatJob, files: list[str], guest: bool
    ) -> AsyncIterator[list[ReplyEvent]]:
        """One round trip when the account takes `create_conversation_params`; else create, then complete."""
        key = account.key

        def body(inline: bool) -> dict[str, Any]:
            return webapi.completion_body(
                job.prompt.text,
                model=job.model,
                attachments=job.prompt.attachments,
                files=files,
                artifacts=job.artifacts,
                create=webapi.conversation_params(conv, job.model, job.thinking) if inline else None,
            )

        inline_refused = False
        if account.inline_create is not False:
            try:
                events = await stack.enter_async_context(self.upstream.completion(key, org, conv, body(True), guest=guest))
                account.inline_create = True
                return events
            except UpstreamFailure as failure:
                # An upstream without inline creation refuses the unknown chat (404, or another 4xx
                # while we do not know yet): fall back, and remember once the explicit way works.
                known = account.inline_create is True
                if failure.kind is not Failure.REJECTED or (known and failure.status != 404):
                    raise
                inline_refused = True
        if inline_refused:
            logger.info("{} does not create chats inline; creating them explicitly", account.alias)
        await self.upstream.create_conversation(key, org, conv, job.model, guest=guest)
        if job.thinking:
            await self.upstream.enable_thinking(key, org, conv, guest=guest)
        events = await stack.enter_async_context(self.upstream.completion(key, org, conv, body(False), guest=guest))
        if inline_refused:
            account.inline_create = False
        return events

    async def _watch_limits(
        self, batches: AsyncIterator[list[ReplyEvent]], account: Account
    ) -> AsyncIterator[list[ReplyEvent]]:
        """Take usage-limit notices out of the answer and cool the account down with them."""
        async for batch in batches:
            if any(isinstance(e, LimitReached) for e in batch):
                for event in batch:
                    if isinstance(event, LimitReached):
                        await self.pool.cool_down(account, event.resets_at)
                batch = [e for e in batch if not isinstance(e, LimitReached)]
            if batch:
                yield batch

    @staticmethod
    async def _first_part(
        batches: AsyncIterator[list[ReplyEvent]], buffered: bool
    ) -> tuple[list[ReplyEvent], AsyncIterator[list[ReplyEvent]] | None]:
        """Read until the answer has visibly started (or, buffered, ended)."""
        head: list[ReplyEvent] = []
        async for batch in batches:
            head.extend(batch)
            if any(isinstance(e, Finish) for e in batch):
                return head, None
            if not buffered and any(isinstance(e, ToolCall) or isinstance(e, (Text, Thinking)) and e.text for e in batch):
                return head, batches
        raise UpstreamFailure(Failure.TRANSIENT, "claude.ai ended the answer without content")

    async def _delete(self, account: Account, org: str, conv: str, guest: bool) -> None:
        for attempt in range(DELETE_ATTEMPTS):
            try:
                await self.upstream.delete_conversation(account.key, org, conv, guest=guest)
                logger.debug("deleted chat {} on {}", conv, account.alias)
                self.metrics.chats_deleted.inc()
                return
            except UpstreamFailure as failure:
                if not failure.retryable or attempt == DELETE_ATTEMPTS - 1:
                    logger.warning("could not delete chat {} on {}: {}", conv, account.alias, failure.message)
                    self.metrics.chat_delete_failures.inc()
                    return
                await asyncio.sleep(DELETE_BACKOFF * (attempt + 1))


async def _find_tool_calls(batches: AsyncIterator[list[ReplyEvent]], plan: ToolPlan) -> AsyncIterator[list[ReplyEvent]]:
    """Turn `<tool_call>` blocks in the answer text into ToolCall events; the rest stays text."""
    parser = ToolCallParser(plan.tools)
    async for batch in batches:
        out: list[ReplyEvent] = []
        for event in batch:
            if isinstance(event, Text):
                out.extend(parser.feed(event.text))
            elif isinstance(event, Finish):
                out.extend(parser.flush())
                out.append(Finish("tool_use") if parser.calls else event)
            else:
                out.append(event)
        if out:
            yield out


def _client_error(failure: UpstreamFailure, *, guest: bool) -> RelayError:
    """An upstream failure as the caller should see it, when no other account will be tried."""
    if failure.kind is Failure.RATE_LIMITED:
        wait = max(1, int((failure.resets_at or time.time() + 60) - time.time()))
        return RateLimited(f"claude.ai usage limit reached; try again in {wait} s", retry_after=wait)
    if failure.kind is Failure.INVALID and guest:
        return AuthError("claude.ai refused this sessionKey (invalid or expired)", code="invalid_session_key")
    if failure.kind is Failure.REJECTED:
        return InvalidRequest(f"claude.ai refused the request: {failure.message}", code="upstream_rejected")
    return UpstreamError(f"claude.ai: {failure.message}")
