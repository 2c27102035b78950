"""An answer from claude.ai whose first part has arrived: it owns its upstream stream, its account
lease and its chat's cleanup until `aclose()`."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from ..claude.failures import UpstreamFailure
from ..reply import ReplyEvent
from .transcript import AnswerForm

# What the client-facing side calls the pool as a provider.
POOL_PROVIDER = "claude.ai"


@dataclass(slots=True)
class ChatAnswer:
    """The answer's head (what arrived before it was handed out) and the rest to iterate.

    A failure while the rest is read is told to `on_failure` (the account learns from it) and
    then raised to the reader, who reports it in-band: output has already gone out.
    """

    alias: str
    head: list[ReplyEvent]
    rest: AsyncIterator[list[ReplyEvent]] | None
    attempts: int
    on_failure: Callable[[UpstreamFailure], Awaitable[None]]
    stack: AsyncExitStack
    first_byte_at: float = field(default_factory=time.monotonic)
    provider: str = POOL_PROVIDER
    # How the answer's chat was found (continued, branched, fresh), and what keeps its session.
    session: str = ""
    keep: Callable[[], Awaitable[None]] | None = None
    form: AnswerForm | None = None

    async def batches(self) -> AsyncGenerator[list[ReplyEvent], None]:
        """The answer in batches of events, the head first."""
        form = self.form
        if form is not None:
            form.feed(self.head)
        yield self.head
        if self.rest is None:
            return
        try:
            async for batch in self.rest:
                if form is not None:
                    form.feed(batch)
                yield batch
        except UpstreamFailure as failure:
            await self.on_failure(failure)
            raise

    async def keep_session(self) -> None:
        """The whole answer reached its last frame: remember where it left the chat (before the
        client sees the end, so that its next turn finds it)."""
        if self.keep is not None:
            keep, self.keep = self.keep, None
            await keep()

    async def aclose(self) -> None:
        """Close the upstream stream, hand the account back, schedule the chat's deletion."""
        await self.stack.aclose()
