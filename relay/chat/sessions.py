"""Conversation sessions: a client's conversation continues one claude.ai chat.

After an answer, relay remembers where it left the chat (the chat, its account, the assistant
message to continue from), keyed by the digest of the transcript up to and including that answer.
A request whose transcript extends a remembered point sends only its new turns, as a child of
that message; a point the chat has already moved past makes a branch (a second child). Idle chats
are deleted after SESSION_TTL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from loguru import logger

from ..claude.prompt import Prompt, build_prompt
from ..config import Settings
from ..metrics import Metrics
from ..pool.sessions import SessionPoint
from ..pool.state import StateStore
from .job import ChatJob
from .transcript import AnswerForm, extend

# Mirror-mode cookies kept (in memory only) to delete their sessions' chats later, at the most.
MAX_GUEST_KEYS = 256

SessionKind = Literal["continued", "branched", "fresh"]


@dataclass(slots=True)
class Continuation:
    """A request that continues a remembered point: its new turns as a prompt."""

    digest: str
    point: SessionPoint
    prompt: Prompt
    branched: bool


@dataclass(slots=True)
class SessionTicket:
    """What an answer needs to remember where it leaves its chat."""

    request_digest: str
    point: SessionPoint
    form: AnswerForm


class Sessions:
    """Finds and keeps session points in the state store."""

    def __init__(self, store: StateStore, settings: Settings, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.guest_keys: OrderedDict[str, str] = OrderedDict()  # "guest:<id>" -> cookie

    async def find(self, job: ChatJob) -> Continuation | None:
        """The remembered point the request's transcript extends the furthest, if any."""
        turns, digests = job.turns, job.digests
        candidates = [d for i, d in enumerate(digests[:-1]) if turns[i].role == "assistant"]
        if not candidates:
            return None
        found = await self.store.find_session(candidates, self.clock())
        if found is None:
            return None
        digest, point = found
        chat = await self.store.session_chat(point.conv)
        if chat is None:
            return None  # the chat has ended (refused, or idle and deleted)
        s = self.settings
        new_turns = turns[digests.index(digest) + 1 :]
        prompt = build_prompt(
            new_turns, no_role_prefix=s.no_role_prefix, disable_artifacts=False, max_history=s.max_chat_history_length
        )
        return Continuation(digest, point, prompt, branched=chat.head != digest)

    async def keep(self, ticket: SessionTicket) -> None:
        """The answer is complete: remember where it left the chat."""
        digest = extend(ticket.request_digest, ticket.form.form())
        await self.store.keep_session(digest, ticket.point, self.clock())

    async def refused(self, cont: Continuation, why: str) -> None:
        """claude.ai refused to continue the chat: no later request tries it again."""
        logger.info("claude.ai refused to continue chat {}: {}", cont.point.conv, why)
        await self.store.forget_chat(cont.point.conv, cont.point.account)

    def counted(self, kind: SessionKind, reason: str = "") -> None:
        self.metrics.session_turns.labels(kind, reason or kind).inc()

    def guest(self, account_id: str, key: str) -> str:
        """The session account of a mirror-mode cookie; the cookie is held in memory to delete
        the session's chat once it is idle."""
        name = "guest:" + account_id
        self.guest_keys[name] = key
        self.guest_keys.move_to_end(name)
        while len(self.guest_keys) > MAX_GUEST_KEYS:
            self.guest_keys.popitem(last=False)
        return name
