"""The one way an answer is written for a client: a renderer per client API streams frames and
accumulates the same answer as its final object, so stream and non-stream cannot disagree.

The base class owns everything the APIs share: stop sequences, block boundaries, tool calls,
the finish reason and the usage estimate. Each API implements the hooks that turn those into its
own frames, and `result()` for its final object.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import RelayError
from .jsontext import loads
from .reply import Cite, Finish, ReplyEvent, StopCutter, Text, Thinking, ToolActivity, ToolCall, ToolOutcome, estimate_tokens

BlockKind = Literal["text", "thinking", "tool_call", "server_tool_use", "server_tool_result"]
Activity = Literal["compact", "none"]
# claude.ai's stop reasons that clients understand; anything else is a plain end of turn.
KNOWN_STOPS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn"})


@dataclass(slots=True)
class Citation:
    """A span of the answer's text and the source it cites; `start`/`end` as the API counts."""

    url: str
    title: str
    cited_text: str
    start: int
    end: int


@dataclass(slots=True)
class Block:
    """One block of the answer, in order: text, thinking, a tool call, or claude.ai's own tool use."""

    kind: BlockKind
    index: int
    parts: list[str] = field(default_factory=list)
    call: ToolCall | None = None
    length: int = 0  # characters written to the block
    citations: list[Citation] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)  # claude.ai's tool use or its results

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass(slots=True)
class _OpenCite:
    url: str
    title: str
    start: int
    parts: list[str] = field(default_factory=list)


def activity_line(name: str, raw_input: str) -> str:
    """claude.ai's own tool use (web search, fetches, integrations) as one line of the answer."""
    try:
        args = loads(raw_input) if raw_input.strip() else {}
    except ValueError:
        args = {}
    detail = next(
        (args[k] for k in ("query", "url", "location", "q") if isinstance(args, dict) and isinstance(args.get(k), str)), None
    )
    shown = json.dumps(detail[:200], ensure_ascii=False) if detail else ""
    return f"\n[{name or 'tool'}{': ' + shown if shown else ''}]\n"


class Renderer(ABC):
    """Reply events in, one client API's frames out; the whole answer kept for `result()`."""

    def __init__(
        self,
        model: str,
        stops: list[str],
        prompt_tokens: int,
        *,
        keep: bool = True,
        activity: Activity = "compact",
        web_search: bool = False,
    ) -> None:
        self.model = model
        self.activity = activity  # SHOW_TOOL_ACTIVITY
        self.web_search = web_search  # the client asked for web search (its API may show it natively)
        self.citations: list[Citation] = []
        self._cites: dict[str, _OpenCite] = {}
        # Whether the answer's text is kept for `result()`; a stream whose API never needs the
        # whole text again saves holding it (a thousand open streams would each keep theirs).
        self.keep = keep
        self.prompt_tokens = prompt_tokens
        self.blocks: list[Block] = []
        self.stop: str | None = None  # set by closing(): end_turn, max_tokens, stop_sequence, tool_use, ...
        self._cutter = StopCutter(stops)
        self._open: Block | None = None
        self._chars = 0
        self._calls = 0
        self.unsent = b""

    # -- what delivery calls --------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """A stop sequence was reached: stop reading the upstream."""
        return self._cutter.stopped

    @property
    def stop_sequence(self) -> str | None:
        return self._cutter.matched

    @property
    def output_tokens(self) -> int:
        """Estimated tokens of everything written so far (text, thinking and call arguments)."""
        return estimate_tokens(self._chars)

    def opening(self) -> bytes:
        return self.on_start()

    def feed(self, event: ReplyEvent) -> bytes:
        if self._cutter.stopped:
            return b""
        if type(event) is Text:
            text = self._cutter.feed(event.text)
            return self._append("text", text) if text else b""
        if type(event) is Thinking:
            return self._append("thinking", event.text) if event.text else b""
        if type(event) is ToolCall:
            out = self._close()
            block = Block("tool_call", len(self.blocks), call=event)
            self.blocks.append(block)
            self._calls += 1
            self._chars += len(event.arguments)
            return out + self.on_tool_call(block)
        if type(event) is Cite:
            return self._cite(event)
        if type(event) is ToolActivity:
            return self.on_tool_activity(event)
        if type(event) is ToolOutcome:
            return self.on_tool_outcome(event)
        return b""

    def _cite(self, cite: Cite) -> bytes:
        if cite.url is not None:
            self._cites[cite.id] = _OpenCite(cite.url, cite.title, self.position())
            return b""
        opened = self._cites.pop(cite.id, None)
        block = self._open
        if opened is None or block is None or block.kind != "text":
            return b""  # unknown or unmatched citation shapes are ignored
        citation = Citation(opened.url, opened.title, "".join(opened.parts), opened.start, self.position())
        block.citations.append(citation)
        self.citations.append(citation)
        return self.on_citation(block, citation)

    def position(self) -> int:
        """Where the text written so far ends, as this API counts citation offsets: within the
        current text block by default."""
        block = self._open
        return block.length if block is not None and block.kind == "text" else 0

    def on_tool_activity(self, event: ToolActivity) -> bytes:
        """claude.ai used one of its tools: one line of the answer (SHOW_TOOL_ACTIVITY) or nothing."""
        return self._append("text", activity_line(event.name, event.input)) if self.activity == "compact" else b""

    def on_tool_outcome(self, event: ToolOutcome) -> bytes:
        """What the tool found; shown only by APIs that have a shape for it."""
        return b""

    def on_citation(self, block: Block, citation: Citation) -> bytes:
        """A cited span has ended; shown only by APIs that have a shape for it."""
        return b""

    def _raw_block(self, kind: BlockKind, payload: dict[str, Any]) -> tuple[bytes, Block]:
        """A block the API shows as it is (claude.ai's own tool use), after closing the open one."""
        out = self._close()
        block = Block(kind, len(self.blocks), payload=payload)
        self.blocks.append(block)
        return out, block

    def closing(self, reason: str) -> bytes:
        """The end of the answer: held-back text, the last block's end, the finish frames."""
        tail = self._cutter.flush()
        out = self._append("text", tail) if tail else b""
        out += self._close()
        if self._calls:
            self.stop = "tool_use"
        elif self._cutter.stopped:
            self.stop = "stop_sequence"
        else:
            self.stop = reason if reason in KNOWN_STOPS else "end_turn"
        return out + self.on_finish(self.stop)

    async def frames(self, batches: AsyncIterator[list[ReplyEvent]]) -> AsyncGenerator[tuple[bytes, bool], None]:
        """The answer's frames, one piece per batch of events and True with the last piece (the
        finish, or a stop sequence: the caller stops reading the upstream there). The opening goes
        out with the first batch: one write, not two. Frames not yet handed out when `batches`
        fails stay in `unsent`, for the caller's in-band error."""
        out = [self.opening()]
        try:
            async for batch in batches:
                if (reason := self._render(batch, out)) is not None:
                    out.append(self.closing(reason))
                    yield b"".join(out), True
                    return
                yield b"".join(out), False
                out = []
        except BaseException:
            self.unsent = b"".join(out)
            raise
        out.append(self.closing("end_turn"))
        yield b"".join(out), True

    def _render(self, batch: list[ReplyEvent], out: list[bytes]) -> str | None:
        """One batch's frames into `out`; the finish reason when the answer ends with it."""
        for event in batch:
            if isinstance(event, Finish):
                return event.reason
            out.append(self.feed(event))
            if self.stopped:
                return "stop_sequence"
        return None

    async def complete(self, batches: AsyncIterator[list[ReplyEvent]]) -> dict[str, Any]:
        """A whole answer at once: the same steps as a stream, frames discarded."""
        async for _ in self.frames(batches):
            pass
        return self.result()

    @abstractmethod
    def error(self, exc: RelayError) -> bytes:
        """The in-band error for a stream whose headers were already sent."""

    @abstractmethod
    def result(self) -> dict[str, Any]:
        """The final object of this API for the answer rendered so far."""

    # -- hooks each API implements ------------------------------------------------------------

    @abstractmethod
    def on_start(self) -> bytes: ...

    @abstractmethod
    def on_block_start(self, block: Block) -> bytes: ...

    @abstractmethod
    def on_delta(self, block: Block, text: str) -> bytes: ...

    @abstractmethod
    def on_block_stop(self, block: Block) -> bytes: ...

    @abstractmethod
    def on_tool_call(self, block: Block) -> bytes:
        """A whole call: claude.ai's calls are parsed from text, so they arrive complete."""

    @abstractmethod
    def on_finish(self, stop: str) -> bytes: ...

    # -- block bookkeeping --------------------------------------------------------------------

    def _append(self, kind: BlockKind, text: str) -> bytes:
        out = b""
        block = self._open
        if block is None or block.kind != kind:
            out = self._close()
            block = self._open = Block(kind, len(self.blocks))
            self.blocks.append(block)
            out += self.on_block_start(block)
        if self.keep:
            block.parts.append(text)
        block.length += len(text)
        self._chars += len(text)
        if self._cites and kind == "text":
            for cite in self._cites.values():
                cite.parts.append(text)
        return out + self.on_delta(block, text)

    def _close(self) -> bytes:
        block, self._open = self._open, None
        return self.on_block_stop(block) if block is not None else b""
