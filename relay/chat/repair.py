"""One repair turn for a call to a tool the request did not declare: claude.ai is told, in the same
chat, which tools exist and asked to answer again; the client sees the repaired answer in place of
the call. A call that is still wrong comes back as text, without its markup."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from ..reply import BadCall, Finish, ReplyEvent, Text

Batches = AsyncIterator[list[ReplyEvent]]


def repair_prompt(bad: BadCall, tools: list[str]) -> str:
    return (
        f"There is no tool named {bad.name!r}. The tools you can call are: {', '.join(tools)}. "
        "Answer my last message again: call only these tools, or none if you need none."
    )


async def repaired(
    batches: Batches, ask_again: Callable[[BadCall], Awaitable[Batches]]
) -> AsyncGenerator[list[ReplyEvent], None]:
    """The answer, with an undeclared tool's call replaced by the answer to one repair turn."""
    bad: BadCall | None = None
    async for batch in batches:
        kept: list[ReplyEvent] = []
        for event in batch:
            if isinstance(event, BadCall):
                bad = bad or event
            elif isinstance(event, Finish) and bad is not None:
                if kept:
                    yield kept
                async for again in await ask_again(bad):
                    yield [Text(e.text) if isinstance(e, BadCall) else e for e in again]
                return
            else:
                kept.append(event)
        if kept:
            yield kept
