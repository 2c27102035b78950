"""Steps between claude.ai's events and the client: quota notices taken out, `<tool_call>` blocks
turned into calls, and the wait for the answer's first visible part."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from ..claude.failures import Failure, UpstreamFailure
from ..claude.tools import ToolCallParser
from ..conversation import ToolPlan
from ..reply import Finish, LimitReached, QuotaSeen, ReplyEvent, Text, Thinking, ToolCall
from .seats import Seat, Source

Batches = AsyncIterator[list[ReplyEvent]]


async def watch_limits(batches: Batches, source: Source, seat: Seat) -> AsyncGenerator[list[ReplyEvent], None]:
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


async def find_tool_calls(batches: Batches, plan: ToolPlan) -> AsyncGenerator[list[ReplyEvent], None]:
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


async def first_part(batches: Batches, buffered: bool) -> tuple[list[ReplyEvent], bool]:
    """Read until the answer has visibly started (or, `buffered`, ended); True when more follows."""
    head: list[ReplyEvent] = []
    async for batch in batches:
        head.extend(batch)
        if any(isinstance(e, Finish) for e in batch):
            return head, False
        if not buffered and any(isinstance(e, ToolCall) or isinstance(e, (Text, Thinking)) and e.text for e in batch):
            return head, True
    raise UpstreamFailure(Failure.TRANSIENT, "claude.ai ended the answer without content")
