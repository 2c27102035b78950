"""Runs chat jobs on the pool (or on a caller's own key in mirror mode): a plain failover loop that
returns an answer once one has started, and the background work the pool needs."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from loguru import logger

from ..claude.client import AccountApi, UpstreamClient
from ..claude.failures import Failure, UpstreamFailure
from ..claude.images import fetch_all
from ..claude.prompt import Prompt, RemoteImage, Upload, build_prompt
from ..config import SessionSpec, Settings
from ..conversation import Chat, TextPart, Turn
from ..metrics import Metrics
from ..pool.account import Account
from ..pool.pool import AccountPool
from ..pool.sessions import SessionPoint
from ..reply import BadCall, Finish, ReplyEvent, Text, Thinking, ToolCall
from . import structured
from .answer import ChatAnswer
from .completion import ChatRecord, CompletionTurn, start_completion
from .deletion import delete_chat
from .filters import find_tool_calls, first_part, watch_limits
from .job import ChatJob, build_job, resolve_model
from .orgs import OrgDiscovery
from .repair import repair_prompt, repaired
from .seats import Failures, GuestSource, PoolSource, Seat, Source
from .sessions import Continuation, SessionKind, Sessions, SessionTicket
from .sweeper import SessionSweeper
from .transcript import AnswerForm
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
        self.sessions = Sessions(pool.store, settings, metrics)
        self.sweeper = SessionSweeper(pool, self.sessions, upstream, self.api, settings, metrics)
        self._fetch_image = fetch_image
        self._background: set[asyncio.Task[None]] = set()

    def api(self, account: Account) -> AccountApi:
        """claude.ai calls as a pooled account, through its own proxy when it has one."""
        return self.upstream.for_key(account.key, proxy=account.proxy)

    def resolve_model(self, name: str) -> tuple[str, bool]:
        return resolve_model(self.settings, name)

    def job(self, chat: Chat, scope: str = "") -> ChatJob:
        return build_job(self.settings, chat, scope)

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
        """Stop reading usage and sweeping sessions (ending those that end with this process); let
        pending chat deletions finish (briefly), then cancel what is left."""
        await self.usage.stop()
        await self.sweeper.stop()
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
        come out of `ChatAnswer.batches()` for the caller to report in-band. A request that extends
        a session continues its chat on its account; it starts a fresh chat (with the whole
        transcript) wherever that is not possible.
        """
        source: Source = GuestSource(guest, self.upstream, self.orgs) if guest else self._pool_source(job.model)
        buffered = buffered or job.checked  # checked whole before the client sees it
        run = _Run(await self.sessions.find(job) if job.digests else None, any(t.role == "assistant" for t in job.turns))
        tried: set[Account] = set()
        failures: Failures = []
        while run.attempts < source.attempts:
            seat = await source.take(tried, failures, prefer=run.prefer)
            run.seated(self._session_account(seat))
            if failures:
                self.metrics.failovers.labels(failures[-1][1].kind.value).inc()
            tried.add(seat.account)
            stack = AsyncExitStack()
            try:
                answer = await self._attempt(stack, source, seat, job, buffered, run)
            except UpstreamFailure as failure:
                await stack.aclose()
                if run.continuing is not None and failure.kind is Failure.REJECTED:
                    await self.sessions.refused(run.continuing, failure.message)
                    run.refused()
                    tried.discard(seat.account)  # the same account, with a fresh chat
                    continue
                await self._failed(source, seat, failure)
                failures.append((seat.account, failure))
            except BaseException:
                await stack.aclose()
                raise
            else:
                if job.digests:
                    self.sessions.counted(run.kind, run.fresh_reason)
                return answer
        raise source.exhausted(failures)

    def _session_account(self, seat: Seat) -> str:
        """Who a session's chat belongs to: the pooled account, or the caller's own cookie."""
        account = seat.account
        return self.sessions.guest(account.id, account.key) if seat.lease is None else account.id

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
        self, stack: AsyncExitStack, source: Source, seat: Seat, job: ChatJob, buffered: bool, run: _Run
    ) -> ChatAnswer:
        """One account's try; everything it holds is on `stack`, closed when the answer is."""
        stack.push_async_callback(source.give_back, seat)
        cont = run.continuing
        turn = CompletionTurn(self._asked(job, cont.prompt if cont else job.prompt), parent=cont.point.parent if cont else None)
        uploads = await self._fetch_remote(turn.prompt)  # a bad image link fails before any chat exists
        if cont is not None:  # the session's chat: never deleted here, whatever happens
            chat, org = ChatRecord(cont.point.conv, settled=True, kept=True), cont.point.org
        else:
            chat, org = ChatRecord(str(uuid.uuid4())), await source.org(seat)
            if self.settings.chat_delete:
                stack.callback(self._delete_later, seat, org, chat)
        at = _Attempt(stack, source, seat, org, chat, job)
        try:
            batches = await self._answer_events(at, turn, uploads)
            head, more = await first_part(batches, buffered)
            if job.checked:
                head = await self._checked(at, turn, head)
        except UpstreamFailure as failure:
            chat.unreachable = failure.kind in UNREACHABLE  # nothing was created, and it could not be deleted anyway
            raise
        await source.succeeded(seat)

        async def on_failure(failure: UpstreamFailure) -> None:
            await self._learn(source, seat, failure)

        answer = ChatAnswer(seat.account.alias, head, batches if more else None, run.attempts, on_failure, stack)
        if job.digests:
            point = SessionPoint(conv=chat.uuid, parent=turn.assistant, account=run.account, org=org)
            ticket = SessionTicket(job.digests[-1], point, AnswerForm())
            answer.session, answer.form = run.kind, ticket.form
            answer.keep = functools.partial(self._keep, ticket, chat, turn)
        return answer

    def _said(self, text: str) -> Prompt:
        """One message of relay's own in a chat (a repair turn), formatted as the client's are."""
        s = self.settings
        ask = Turn("user", [TextPart(text)])
        return build_prompt(
            [ask], no_role_prefix=s.no_role_prefix, disable_artifacts=False, max_history=s.max_chat_history_length
        )

    def _asked(self, job: ChatJob, prompt: Prompt) -> Prompt:
        """The prompt as sent: for a structured answer, the format is said after the conversation
        (not when a tool call is demanded: then the answer is that call)."""
        if job.output is None or (job.tools is not None and job.tools.choice == "required"):
            return prompt
        note = structured.instruction(job.output)
        text = f"{prompt.text}\n\n{note}" if self.settings.no_role_prefix else f"{prompt.text}\n\nSystem: {note}"
        return Prompt(text, prompt.attachments, prompt.files)

    async def _checked(self, at: _Attempt, turn: CompletionTurn, head: list[ReplyEvent]) -> list[ReplyEvent]:
        """A whole answer checked before the client sees it (a structured answer, strict tools'
        calls); one repair turn in the same chat when it fails; a structured answer becomes
        exactly its JSON, cut in pieces for streaming clients."""
        job = at.job
        if why := self._problem(head, job):
            logger.info("{}'s answer does not match ({}); asking once more", at.seat.account.alias, why)
            again = CompletionTurn(self._said(structured.repair_prompt(why, job.output)))
            again.parent = turn.assistant
            head, _ = await first_part(await self._completion_events(at, again, []), True)
            turn.assistant = again.assistant
            if why := self._problem(head, job):
                self.metrics.structured_outputs.labels("failed").inc()
                raise structured.OutputInvalid(f"claude.ai's answer does not match the requested format, twice: {why}")
            self.metrics.structured_outputs.labels("repaired").inc()
        else:
            self.metrics.structured_outputs.labels("valid").inc()
        if job.output is None or any(isinstance(e, ToolCall) for e in head):
            return head
        fixed, _ = structured.problem(_text(head), job.output)
        assert fixed is not None
        finish = next((e for e in head if isinstance(e, Finish)), Finish("end_turn"))
        pieces = [Text(fixed[i : i + structured.STREAM_PIECE]) for i in range(0, len(fixed), structured.STREAM_PIECE)]
        return [*(e for e in head if isinstance(e, Thinking)), *pieces, finish]

    @staticmethod
    def _problem(head: list[ReplyEvent], job: ChatJob) -> str:
        """What is wrong with an answer: a strict tool's call, or (with no call) the structured answer."""
        calls = [e for e in head if isinstance(e, ToolCall)]
        tools = {t.name: t for t in job.tools.tools} if job.tools else {}
        for call in calls:
            if (tool := tools.get(call.name)) is not None and tool.strict and (why := structured.call_problem(call, tool)):
                return why
        if calls or job.output is None:
            return ""
        return structured.problem(_text(head), job.output)[1]

    async def _keep(self, ticket: SessionTicket, chat: ChatRecord, turn: CompletionTurn) -> None:
        chat.kept = True  # the session keeps it: deleted once idle, not now
        ticket.point = ticket.point.model_copy(update={"parent": turn.assistant})  # after a repair turn, its answer
        await self.sessions.keep(ticket)

    async def _answer_events(
        self, at: _Attempt, turn: CompletionTurn, uploads: list[Upload]
    ) -> AsyncGenerator[list[ReplyEvent], None]:
        """Uploads (concurrently), then the completion, its quota notices taken out, its tool calls
        found and a call to an undeclared tool repaired."""
        api, org = at.seat.api, at.org
        files = list(await asyncio.gather(*(api.upload(org, u.filename, u.content_type, u.data) for u in uploads)))
        found = await self._completion_events(at, turn, files)
        if at.job.tools is None:
            return found
        fixed = repaired(found, functools.partial(self._ask_again, at, turn))
        at.stack.push_async_callback(fixed.aclose)
        return fixed

    async def _completion_events(
        self, at: _Attempt, turn: CompletionTurn, files: list[str]
    ) -> AsyncGenerator[list[ReplyEvent], None]:
        """One completion's events, closed with the attempt: quota notices out, tool calls found."""
        learned = functools.partial(at.source.learned, at.seat)
        temporary = self.settings.temporary_chats
        events = await start_completion(
            at.stack, at.seat, at.org, at.chat, at.job, turn, files, temporary=temporary, learned=learned
        )
        watched = watch_limits(events, at.source, at.seat)
        at.stack.push_async_callback(watched.aclose)
        if at.job.tools is None:
            return watched
        found = find_tool_calls(watched, at.job.tools)
        at.stack.push_async_callback(found.aclose)
        return found

    async def _ask_again(self, at: _Attempt, turn: CompletionTurn, bad: BadCall) -> AsyncIterator[list[ReplyEvent]]:
        """The repair turn, in the same chat after the answer that called an undeclared tool; the
        session then goes on after the repaired answer."""
        assert at.job.tools is not None
        tools = [t.name for t in at.job.tools.offered]
        again = CompletionTurn(self._asked(at.job, self._said(repair_prompt(bad, tools))))
        again.parent = turn.assistant
        logger.info("{} called an undeclared tool {!r}; asking once more", at.seat.account.alias, bad.name[:64])
        found = await self._completion_events(at, again, [])
        turn.assistant = again.assistant
        return found

    def _delete_later(self, seat: Seat, org: str, chat: ChatRecord) -> None:
        if not chat.unreachable and not chat.kept:
            self.spawn(delete_chat(seat.api, seat.account.alias, org, chat, self.metrics))

    async def _fetch_remote(self, prompt: Prompt) -> list[Upload]:
        """The prompt's uploads, http(s) images fetched the first time they are needed."""
        await fetch_all(prompt.files, self._fetch_image, self.settings.max_body_size)
        return [f for f in prompt.files if isinstance(f, Upload)]


@dataclass(slots=True)
class _Attempt:
    """What one account's try holds: its exit stack, the account, the chat, the job."""

    stack: AsyncExitStack
    source: Source
    seat: Seat
    org: str
    chat: ChatRecord
    job: ChatJob


def _text(events: list[ReplyEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Text))


class _Run:
    """One request's way through the pool: attempts made, and whether it still continues a session."""

    __slots__ = ("account", "attempts", "cont", "continuing", "fresh_reason", "refused_on")

    def __init__(self, cont: Continuation | None, answered: bool) -> None:
        self.cont = cont
        self.continuing: Continuation | None = None
        self.attempts = 0
        self.account = ""
        # No match: a new conversation. Divergence: one that holds earlier answers, yet extends no
        # remembered point (its session expired, or the client changed its history or tools).
        self.fresh_reason = "" if cont else "divergence" if answered else "no_match"
        self.refused_on: str | None = None

    @property
    def prefer(self) -> str | None:
        """The account to ask first: the session's, or the one that just refused to continue it."""
        return self.cont.point.account if self.cont else self.refused_on

    def seated(self, account: str) -> None:
        """An attempt on `account`: it continues the session when the session's account it is."""
        self.attempts += 1
        self.account = account
        if self.cont is not None and self.cont.point.account != account:
            self.cont, self.fresh_reason = None, "account_moved"
        self.continuing = self.cont

    def refused(self) -> None:
        """claude.ai refused the continuation: a fresh chat on the same account, not counted as an attempt."""
        self.cont, self.continuing, self.fresh_reason = None, None, "refused"
        self.refused_on = self.account
        self.attempts -= 1

    @property
    def kind(self) -> SessionKind:
        if self.continuing is None:
            return "fresh"
        return "branched" if self.continuing.branched else "continued"
