"""One chat on claude.ai: the job built from a `Chat`, the account for each attempt, failover
before the first byte, and cleanup after. Knows no client API and nothing of HTTP serving."""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from .claude import webapi
from .claude.client import AccountApi, UpstreamClient
from .claude.failures import Failure, UpstreamFailure
from .claude.prompt import Prompt, RemoteImage, Upload, build_prompt
from .claude.tools import ToolCallParser
from .config import THINK_SUFFIX, SessionSpec, Settings
from .conversation import Chat, Effort, ToolPlan
from .errors import AuthError, InvalidRequest, ModelNotFound, RateLimited, RelayError, UpstreamError, UpstreamTimeout
from .metrics import Metrics
from .pool.account import Account
from .pool.pool import AccountPool
from .pool.state import Lease
from .reply import Finish, LimitReached, QuotaSeen, ReplyEvent, Text, Thinking, ToolCall, Window, estimate_tokens

# Deleting a chat is housekeeping, never on the answer's critical path: tries 0.5, 1, 2 and 4 s
# apart, which also outlasts a completion still being created upstream after it was cut off.
DELETE_ATTEMPTS = 5
DELETE_BACKOFF = 0.5
# Failures after which the account cannot be asked for anything, a delete included.
UNREACHABLE = frozenset({Failure.INVALID, Failure.DISABLED, Failure.CLOUDFLARE, Failure.REGION})
# The first /usage round waits for start-up's organization discovery.
USAGE_FIRST_DELAY = 2.0
# Mirror keys get cached org ids too, but a bounded number of them.
MAX_GUEST_ORGS = 256
CLAUDE_MODEL = re.compile(r"^claude-[a-z0-9][a-z0-9.\-]*$")


@dataclass(slots=True)
class ChatJob:
    """What to ask claude.ai, independent of the client API that asked."""

    model: str
    thinking: bool
    prompt: Prompt
    artifacts: bool = True
    tools: ToolPlan | None = None
    web_search: bool = False
    effort: Effort | None = None

    @property
    def prompt_tokens(self) -> int:
        """Estimated input tokens: the prompt and its text attachments."""
        return estimate_tokens(len(self.prompt.text) + sum(len(a.content) for a in self.prompt.attachments))


@dataclass(slots=True)
class Reply:
    """An answer whose first part has arrived; iterate for the rest. `alias` names who served."""

    alias: str
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


@dataclass(slots=True)
class ChatRecord:
    """One attempt's chat on claude.ai: `settled` once claude.ai answered (or refused) its creation,
    so that what a delete finds is the truth."""

    uuid: str
    settled: bool = False


@dataclass(eq=False, slots=True)
class Seat:
    """One attempt's account: the pooled one leased for it, or a caller's own key."""

    account: Account
    api: AccountApi
    lease: Lease | None = None


FetchImage = Callable[[RemoteImage], Awaitable[Upload]]


class _Orgs:
    """Organization discovery, once per key however many requests ask at the same time."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[str]] = {}

    async def discover(self, seat: Seat) -> str:
        key = seat.account.key
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(seat.api.discover_org())
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)


class _Source(ABC):
    """Where the accounts for a request come from, and what is learned from their failures."""

    attempts: int

    @abstractmethod
    async def take(self, tried: set[Account], failures: list[tuple[Account, UpstreamFailure]]) -> Seat: ...

    async def give_back(self, seat: Seat) -> None:
        """Release what `take` held."""

    @abstractmethod
    async def org(self, seat: Seat) -> str: ...

    async def learn(self, seat: Seat, failure: UpstreamFailure) -> None:
        """Record what the failure says about the account."""

    def succeeded(self, seat: Seat) -> None:
        """The account's answer started."""

    async def limit_reached(self, seat: Seat, resets_at: float | None) -> None:
        """The account reached its usage limit with an answer that is itself fine."""

    async def quota(self, seat: Seat, windows: dict[str, Window]) -> None:
        """claude.ai reported the account's quota windows."""

    @abstractmethod
    def give_up(self, failure: UpstreamFailure) -> RelayError:
        """The error for a failure that will not be tried elsewhere."""

    @abstractmethod
    def exhausted(self, failures: list[tuple[Account, UpstreamFailure]]) -> RelayError:
        """The error when every attempt failed."""


class _PoolSource(_Source):
    def __init__(self, service: ChatService, model: str | None = None) -> None:
        self.service = service
        self.pool = service.pool
        # MAX_RETRIES, else every account but at most five (accounts come and go while running).
        self.attempts = service.settings.max_retries or max(1, min(len(service.pool), 5))
        self.model = model

    async def take(self, tried: set[Account], failures: list[tuple[Account, UpstreamFailure]]) -> Seat:
        try:
            lease = await self.pool.acquire(exclude=tried, model=self.model)
        except InvalidRequest:
            raise
        except RelayError:
            raise self.exhausted(failures) from None
        return Seat(lease.account, self.service.api(lease.account), lease)

    async def give_back(self, seat: Seat) -> None:
        if seat.lease is not None:
            await self.pool.release(seat.lease)

    async def org(self, seat: Seat) -> str:
        account = seat.account
        if not account.org_id:
            account.org_id = await self.service.orgs.discover(seat)
            await self.pool.save_org(account)
        return account.org_id

    async def learn(self, seat: Seat, failure: UpstreamFailure) -> None:
        if failure.kind is Failure.MODEL_UNAVAILABLE and self.model is not None:
            self.pool.record_missing_model(seat.account, self.model)
            return
        await self.pool.record_failure(seat.account, failure)

    def succeeded(self, seat: Seat) -> None:
        self.pool.record_success(seat.account)

    async def limit_reached(self, seat: Seat, resets_at: float | None) -> None:
        await self.pool.cool_down(seat.account, resets_at)

    async def quota(self, seat: Seat, windows: dict[str, Window]) -> None:
        await self.pool.record_usage(seat.account, windows)

    def give_up(self, failure: UpstreamFailure) -> RelayError:
        return _client_error(failure, self.pool.now())

    def exhausted(self, failures: list[tuple[Account, UpstreamFailure]]) -> RelayError:
        """The pool's own story, or what each attempt met."""
        if not failures or not any(a.usable(self.pool.now()) for a in self.pool.accounts):
            return self.pool.unavailable()
        if all(f.kind is Failure.MODEL_UNAVAILABLE for _, f in failures):
            return InvalidRequest(
                f"model {self.model!r} is not available on any account's plan", param="model", code="model_not_available"
            )
        if all(f.kind is Failure.RATE_LIMITED for _, f in failures):
            # Limits that reset within the second still mean "later", not a broken upstream.
            return _client_error(min(failures, key=lambda af: af[1].resets_at or 0)[1], self.pool.now())
        detail = "; ".join(f"{a.alias}: {f.message}" for a, f in failures)
        if failures[-1][1].kind is Failure.TIMEOUT:
            return UpstreamTimeout(f"claude.ai did not answer ({detail})")
        return UpstreamError(f"claude.ai failed on {len(failures)} attempt(s): {detail}")


class _GuestSource(_Source):
    """Mirror mode: one attempt with the caller's own key; nothing is learned for the pool."""

    attempts = 1

    def __init__(self, service: ChatService, spec: SessionSpec) -> None:
        self.service = service
        key = spec.key.get_secret_value()
        self.seat = Seat(Account(key=key, alias="mirror", org_id=spec.org_id), service.upstream.for_key(key, guest=True))

    async def take(self, tried: set[Account], failures: list[tuple[Account, UpstreamFailure]]) -> Seat:
        return self.seat

    async def org(self, seat: Seat) -> str:
        account, cache = seat.account, self.service.guest_orgs
        if account.org_id:
            return account.org_id
        if cached := cache.get(account.key):
            cache.move_to_end(account.key)
            return cached
        org = cache[account.key] = await self.service.orgs.discover(seat)
        while len(cache) > MAX_GUEST_ORGS:
            cache.popitem(last=False)
        return org

    def give_up(self, failure: UpstreamFailure) -> RelayError:
        if failure.kind is Failure.INVALID:
            return AuthError("claude.ai refused this sessionKey (invalid or expired)", code="invalid_session_key")
        return _client_error(failure, time.time())

    def exhausted(self, failures: list[tuple[Account, UpstreamFailure]]) -> RelayError:
        return self.give_up(failures[-1][1])


class ChatService:
    """Runs chat jobs on the pool (or on a caller's own key in mirror mode)."""

    def __init__(
        self,
        upstream: UpstreamClient,
        pool: AccountPool,
        settings: Settings,
        *,
        metrics: Metrics,
        fetch_image: FetchImage,
    ) -> None:
        self.upstream = upstream
        self.pool = pool
        self.settings = settings
        self.metrics = metrics
        self.orgs = _Orgs()
        self.guest_orgs: OrderedDict[str, str] = OrderedDict()
        self._fetch_image = fetch_image
        self._background: set[asyncio.Task[None]] = set()
        self._usage_task: asyncio.Future[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Find every account's organization in the background so no user request waits for it."""
        source = _PoolSource(self)
        for account in self.pool.accounts:
            if account.org_id is None and account.usable(self.pool.now()):
                self._spawn(self._warm(source, Seat(account, self.api(account))))

    def api(self, account: Account) -> AccountApi:
        """claude.ai calls as a pooled account, through its own proxy when it has one."""
        return self.upstream.for_key(account.key, proxy=account.proxy)

    def watch_usage(self) -> None:
        """Ask /usage for every account now and then, in the background (never on a request's
        path); an account whose windows a stream reported recently is not asked."""
        self._usage_task = asyncio.ensure_future(self._usage_loop())

    async def _usage_loop(self) -> None:
        every = self.settings.usage_refresh
        await asyncio.sleep(USAGE_FIRST_DELAY)
        while True:
            for account in self.pool.accounts:
                now = self.pool.now()
                if not account.org_id or not account.usable(now) or (account.usage_at and now - account.usage_at < every):
                    continue
                try:
                    windows = await self.api(account).usage(account.org_id)
                except UpstreamFailure as failure:
                    # Quota is information; failing to read it says nothing about the account.
                    logger.debug("usage of {} not read: {}", account.alias, failure.message)
                    continue
                if windows:
                    await self.pool.record_usage(account, windows)
            await asyncio.sleep(every)

    async def _warm(self, source: _PoolSource, seat: Seat) -> None:
        try:
            await source.org(seat)
        except UpstreamFailure as failure:
            self.metrics.upstream_errors.labels(failure.kind.value).inc()
            await source.learn(seat, failure)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop reading usage; let pending chat deletions finish (briefly), then cancel what is left."""
        if self._usage_task is not None:
            self._usage_task.cancel()
            await asyncio.gather(self._usage_task, return_exceptions=True)
        if self._background:
            _, pending = await asyncio.wait(set(self._background), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run housekeeping in the background; shutdown gives it a moment to finish."""
        self._spawn(coro)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- building the job ----------------------------------------------------------------------

    def resolve_model(self, name: str) -> tuple[str, bool]:
        """(upstream model, thinking on) for a model a client asked for.

        Listed models and any other `claude-*` name pass (claude.ai decides whether the account has
        it, so dated ids such as Claude Code's work); anything else is a clear 404.
        """
        if name not in self.settings.served_models and not CLAUDE_MODEL.match(name):
            raise ModelNotFound(f"model {name!r} is not served here; GET /v1/models lists the models (set MODELS to change them)")
        if name.endswith(THINK_SUFFIX):
            return name.removesuffix(THINK_SUFFIX), True
        return name, False

    def job(self, chat: Chat) -> ChatJob:
        """What to ask claude.ai for this chat; every problem with the request is raised here."""
        s = self.settings
        model, think_model = self.resolve_model(chat.model)
        tools = chat.tools if chat.tools and chat.tools.active else None
        prompt = build_prompt(
            chat.turns,
            no_role_prefix=s.no_role_prefix,
            disable_artifacts=s.prompt_disable_artifacts or tools is not None,
            max_history=s.max_chat_history_length,
            tools=tools,
        )
        artifacts = not s.prompt_disable_artifacts and tools is None
        return ChatJob(
            model=model,
            thinking=chat.thinking or think_model,
            prompt=prompt,
            artifacts=artifacts,
            tools=tools,
            web_search=chat.web_search,
            effort=chat.effort,
        )

    # -- the request path ----------------------------------------------------------------------

    @asynccontextmanager
    async def open(self, job: ChatJob, *, guest: SessionSpec | None = None, buffered: bool = False) -> AsyncIterator[Reply]:
        """An answer that has started, failing over between accounts until one starts.

        With `buffered` the whole answer is read before it is handed out, so any failure can still
        move to another account. Otherwise only failures before the first content may; later ones
        propagate out of `Reply.batches()` for the caller to report in-band.
        """
        uploads = await self._fetch_remote(job.prompt)
        source: _Source = _GuestSource(self, guest) if guest else _PoolSource(self, job.model)
        tried: set[Account] = set()
        failures: list[tuple[Account, UpstreamFailure]] = []
        for attempt in range(1, source.attempts + 1):
            seat = await source.take(tried, failures)
            account = seat.account
            if failures:
                self.metrics.failovers.labels(failures[-1][1].kind.value).inc()
            tried.add(account)
            conv = ChatRecord(str(uuid.uuid4()))
            org: str | None = None
            started = False
            try:
                org = await source.org(seat)
                async with self._converse(source, seat, org, conv, job, uploads) as events:
                    head, rest = await self._first_part(events, buffered)
                    started = True
                    source.succeeded(seat)
                    yield Reply(account.alias, head, rest, attempt)
                return
            except UpstreamFailure as failure:
                self.metrics.upstream_errors.labels(failure.kind.value).inc()
                await source.learn(seat, failure)
                if started:
                    raise
                failures.append((account, failure))
                if failure.kind in UNREACHABLE:
                    org = None  # nothing was created, and the account could not delete it anyway
                logger.info("{} failed on {}: {}", "attempt" if failure.retryable else "request", account.alias, failure)
                if not failure.retryable:
                    raise source.give_up(failure) from None
            finally:
                await source.give_back(seat)
                if org is not None and self.settings.chat_delete:
                    self._spawn(self._delete(seat, org, conv))
        raise source.exhausted(failures)

    async def _fetch_remote(self, prompt: Prompt) -> list[Upload]:
        """Fetch http(s) images once per request (all at once), before any account is used."""

        async def one(item: Upload | RemoteImage) -> Upload:
            return item if isinstance(item, Upload) else await self._fetch_image(item)

        return list(await asyncio.gather(*(one(f) for f in prompt.files)))

    @asynccontextmanager
    async def _converse(
        self, source: _Source, seat: Seat, org: str, conv: ChatRecord, job: ChatJob, uploads: list[Upload]
    ) -> AsyncIterator[AsyncIterator[list[ReplyEvent]]]:
        """Uploads (concurrently), then the completion; the chat is created on the way when possible."""
        files = list(await asyncio.gather(*(seat.api.upload(org, u.filename, u.content_type, u.data) for u in uploads)))
        async with AsyncExitStack() as stack:
            events = _watch_limits(await self._start_completion(stack, seat, org, conv, job, files), source, seat)
            yield _find_tool_calls(events, job.tools) if job.tools else events

    async def _start_completion(
        self, stack: AsyncExitStack, seat: Seat, org: str, chat: ChatRecord, job: ChatJob, files: list[str]
    ) -> AsyncIterator[list[ReplyEvent]]:
        """One round trip when the account takes `create_conversation_params`; else create, then complete."""
        account, api, conv = seat.account, seat.api, chat.uuid

        def body(inline: bool, effort: bool) -> dict[str, Any]:
            return webapi.completion_body(
                job.prompt.text,
                model=job.model,
                attachments=job.prompt.attachments,
                files=files,
                artifacts=job.artifacts,
                web_search=job.web_search,
                effort=job.effort if effort else None,
                thinking=job.thinking,
                create=webapi.conversation_params(conv, job.model, job.thinking, self.settings.temporary_chats)
                if inline
                else None,
            )

        inline_refused = False
        if account.inline_create is not False:
            try:
                events = await self._complete(stack, seat, org, conv, job, lambda effort: body(True, effort))
                chat.settled = True
                account.inline_create = True
                return events
            except UpstreamFailure as failure:
                chat.settled = failure.status is not None  # claude.ai answered, so it created nothing
                # An upstream without inline creation refuses the unknown chat (404, or another 4xx
                # while we do not know yet): fall back, and remember once the explicit way works.
                known = account.inline_create is True
                if failure.kind is not Failure.REJECTED or (known and failure.status != 404):
                    raise
                inline_refused = True
        if inline_refused:
            logger.info("{} does not create chats inline; creating them explicitly", account.alias)
        await api.create_conversation(org, conv, job.model, self.settings.temporary_chats)
        chat.settled = True
        if job.thinking:
            await api.enable_thinking(org, conv)
        events = await self._complete(stack, seat, org, conv, job, lambda effort: body(False, effort))
        if inline_refused:
            account.inline_create = False
        return events

    @staticmethod
    async def _complete(
        stack: AsyncExitStack, seat: Seat, org: str, conv: str, job: ChatJob, body: Callable[[bool], dict[str, Any]]
    ) -> AsyncIterator[list[ReplyEvent]]:
        """The completion call, with the effort fields while the account is not known to refuse
        them: a refusal (a 4xx other than 404) is tried again without them, and remembered for the
        account once that worked."""
        account, api = seat.account, seat.api
        with_effort = job.effort is not None and account.effort_fields is not False
        try:
            events = await stack.enter_async_context(api.completion(org, conv, body(with_effort)))
        except UpstreamFailure as failure:
            if not with_effort or account.effort_fields or failure.kind is not Failure.REJECTED or failure.status == 404:
                raise
        else:
            if with_effort:
                account.effort_fields = True
            return events
        events = await stack.enter_async_context(api.completion(org, conv, body(False)))
        account.effort_fields = False
        logger.info("{} does not take the effort fields; asking without them", account.alias)
        return events

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

    async def _delete(self, seat: Seat, org: str, chat: ChatRecord) -> None:
        """Delete the chat. A 404 is believed only once claude.ai has answered the completion: a
        completion cut off before that may still create the chat after this delete arrived."""
        alias, conv = seat.account.alias, chat.uuid
        for attempt in range(DELETE_ATTEMPTS):
            try:
                existed = await seat.api.delete_conversation(org, conv)
            except UpstreamFailure as failure:
                if not failure.retryable or attempt == DELETE_ATTEMPTS - 1:
                    logger.warning("could not delete chat {} on {}: {}", conv, alias, failure.message)
                    self.metrics.chat_delete_failures.inc()
                    return
            else:
                if existed:
                    logger.debug("deleted chat {} on {}", conv, alias)
                    self.metrics.chats_deleted.inc()
                    return
                if chat.settled:
                    return
            await asyncio.sleep(DELETE_BACKOFF * 2**attempt)


async def _watch_limits(batches: AsyncIterator[list[ReplyEvent]], source: _Source, seat: Seat) -> AsyncIterator[list[ReplyEvent]]:
    """Take quota notices (windows, limits reached) out of the answer and tell the source."""
    async for batch in batches:
        if any(type(e) in (LimitReached, QuotaSeen) for e in batch):
            for event in batch:
                if isinstance(event, QuotaSeen):
                    await source.quota(seat, event.windows)
                elif isinstance(event, LimitReached):
                    await source.limit_reached(seat, event.resets_at)
            batch = [e for e in batch if type(e) not in (LimitReached, QuotaSeen)]
        if batch:
            yield batch


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


def _client_error(failure: UpstreamFailure, now: float) -> RelayError:
    """An upstream failure as the caller should see it, when no other account will be tried."""
    if failure.kind is Failure.RATE_LIMITED:
        wait = max(1, math.ceil((failure.resets_at or now + 60) - now))
        return RateLimited(f"claude.ai usage limit reached; try again in {wait} s", retry_after=wait)
    if failure.kind is Failure.REJECTED:
        return InvalidRequest(f"claude.ai refused the request: {failure.message}", code="upstream_rejected")
    if failure.kind is Failure.TIMEOUT:
        return UpstreamTimeout(f"claude.ai: {failure.message}")
    return UpstreamError(f"claude.ai: {failure.message}")
