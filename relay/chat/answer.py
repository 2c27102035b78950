"""An answer from claude.ai whose first part has arrived: it owns its upstream stream, its account
lease and its chat's cleanup until `aclose()`."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from ..claude.failures import UpstreamFailure
from ..reply import ReplyEvent

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

    async def batches(self) -> AsyncGenerator[list[ReplyEvent], None]:
        """The answer in batches of events, the head first."""
        yield self.head
        if self.rest is None:
            return
        try:
            async for batch in self.rest:
                yield batch
        except UpstreamFailure as failure:
            await self.on_failure(failure)
            raise

    async def aclose(self) -> None:
        """Close the upstream stream, hand the account back, schedule the chat's deletion."""
        await self.stack.aclose()
