"""Starting one completion on one account: the chat created on the way (inline) when the account
takes it, else explicitly first; the features the account refuses dropped as it goes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from ..claude import webapi
from ..claude.failures import UpstreamFailure
from ..claude.prompt import Prompt
from ..reply import ReplyEvent
from .features import EFFORT, INLINE_CREATE, Negotiation
from .job import ChatJob
from .seats import Seat


@dataclass(slots=True)
class ChatRecord:
    """One attempt's chat on claude.ai: `settled` once claude.ai answered (or refused) its creation,
    so that what a delete finds is the truth; `unreachable` when the account cannot even delete it;
    `kept` when a session keeps it (deleted once idle instead)."""

    uuid: str
    settled: bool = False
    unreachable: bool = False
    kept: bool = False


@dataclass(slots=True)
class CompletionTurn:
    """What one completion sends: the prompt, and the assistant message it continues (None: the
    first turn of a new chat); the turn's two message ids are chosen here."""

    prompt: Prompt
    parent: str | None = None
    human: str = field(default_factory=lambda: str(uuid.uuid4()))
    assistant: str = field(default_factory=lambda: str(uuid.uuid4()))


async def start_completion(
    stack: AsyncExitStack,
    seat: Seat,
    org: str,
    chat: ChatRecord,
    job: ChatJob,
    turn: CompletionTurn,
    files: list[str],
    *,
    temporary: bool,
    learned: Callable[[], Awaitable[None]],
) -> AsyncIterator[list[ReplyEvent]]:
    """The completion's events (closed with `stack`); one round trip when the account creates
    inline. `learned` is told when the account's features are news."""
    api, conv = seat.api, chat.uuid
    features = Negotiation(seat.account, job, continuing=turn.parent is not None)
    created = False
    while True:
        inline = features.uses(INLINE_CREATE)
        if not inline and not created and turn.parent is None:
            await api.create_conversation(org, conv, job.model, temporary)
            chat.settled = created = True
            if job.thinking:
                await api.enable_thinking(org, conv)
        body = webapi.completion_body(
            turn.prompt.text,
            model=job.model,
            attachments=turn.prompt.attachments,
            files=files,
            artifacts=job.artifacts,
            web_search=job.web_search,
            effort=job.effort if features.uses(EFFORT) else None,
            thinking=job.thinking,
            create=webapi.conversation_params(conv, job.model, job.thinking, temporary) if inline else None,
            parent=turn.parent,
            turn=(turn.human, turn.assistant),
        )
        try:
            events = await stack.enter_async_context(api.completion(org, conv, body))
        except UpstreamFailure as failure:
            if inline:
                chat.settled = failure.status is not None  # claude.ai answered, so it created nothing
            if features.drop_refused(failure):
                continue
            raise
        chat.settled = True
        if features.settle():
            await learned()
        return events
