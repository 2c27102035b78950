"""The one way an answer is written for a client: a renderer per client API streams frames and
accumulates the same answer as its final object, so stream and non-stream cannot disagree.

The base class owns everything the APIs share: stop sequences, block boundaries, tool calls,
the finish reason and the usage estimate. Each API implements the hooks that turn those into its
own frames, and `result()` for its final object.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import RelayError
from .reply import Finish, ReplyEvent, StopCutter, Text, Thinking, ToolCall, estimate_tokens

BlockKind = Literal["text", "thinking", "tool_call"]
# claude.ai's stop reasons that clients understand; anything else is a plain end of turn.
KNOWN_STOPS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn"})


@dataclass(slots=True)
class Block:
    """One block of the answer, in order: text, thinking, or a tool call."""

    kind: BlockKind
    index: int
    parts: list[str] = field(default_factory=list)
    call: ToolCall | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Renderer(ABC):
    """Reply events in, one client API's frames out; the whole answer kept for `result()`."""

    def __init__(self, model: str, stops: list[str], prompt_tokens: int, *, keep: bool = True) -> None:
        self.model = model
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
        return b""

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

    def complete(self, events: list[ReplyEvent]) -> dict[str, Any]:
        """A whole answer at once: the same steps as a stream, frames discarded."""
        self.opening()
        reason = "end_turn"
        for event in events:
            if isinstance(event, Finish):
                reason = event.reason
                break
            self.feed(event)
            if self.stopped:
                break
        self.closing(reason)
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
        self._chars += len(text)
        return out + self.on_delta(block, text)

    def _close(self) -> bytes:
        block, self._open = self._open, None
        return self.on_block_stop(block) if block is not None else b""
