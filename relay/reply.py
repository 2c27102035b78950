"""Provider-neutral pieces of an answer, produced from upstream events and written out per client API."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Text:
    text: str


@dataclass(slots=True)
class Thinking:
    text: str


@dataclass(slots=True)
class Finish:
    reason: str


@dataclass(slots=True)
class ToolCall:
    """A function call the model made in the agreed format; `arguments` is a JSON object as text."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class LimitReached:
    """The account hit its usage limit with this answer; the answer itself is complete."""

    resets_at: float | None


@dataclass(frozen=True, slots=True)
class Window:
    """One quota window of an account (claude.ai meters 5-hour and 7-day windows)."""

    utilization: float  # 0..1 of the window used
    resets_at: float | None  # unix seconds
    status: str = "within_limit"

    def exhausted(self, now: float) -> bool:
        """Used up until it resets (a window whose reset has passed is fresh again)."""
        live = self.resets_at is None or self.resets_at > now
        return live and (self.status != "within_limit" or self.utilization >= 1.0)

    def room(self, now: float) -> float:
        """What is left of the window, 0..1; all of it once the window has reset."""
        if self.resets_at is not None and self.resets_at <= now:
            return 1.0
        return max(0.0, 1.0 - self.utilization)


@dataclass(slots=True)
class QuotaSeen:
    """The account's quota windows as claude.ai reported them at the end of an answer."""

    windows: dict[str, Window]


@dataclass(slots=True)
class ToolActivity:
    """claude.ai ran one of its own tools (web search, web fetch, an integration); `input` is JSON."""

    id: str
    name: str
    input: str


@dataclass(slots=True)
class ToolOutcome:
    """What such a tool found: for web search, results with `url`, `title` and `page_age`."""

    tool_id: str
    name: str
    results: list[dict[str, str]]


@dataclass(slots=True)
class Cite:
    """A cited span of the answer text begins here (with its source) or, without `url`, ends."""

    id: str
    url: str | None = None
    title: str = ""


@dataclass(slots=True)
class BadCall:
    """A call block naming a tool the request did not declare: repaired upstream, never shown as is.
    `text` is the block without its markup."""

    name: str
    text: str


ReplyEvent = Text | Thinking | ToolCall | Finish | LimitReached | QuotaSeen | ToolActivity | ToolOutcome | Cite | BadCall


def estimate_tokens(chars: int) -> int:
    """Rough token count (about four characters a token); claude.ai reports no usage."""
    return (chars + 3) // 4 if chars else 0


class StopCutter:
    """Cuts streamed text at the first stop sequence, holding back only what could start one."""

    __slots__ = ("_keep", "_pending", "_stops", "matched", "stopped")

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._keep = max((len(s) for s in self._stops), default=1) - 1
        self._pending = ""
        self.stopped = False
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """Text that is safe to emit now; sets `stopped` once a stop sequence appeared."""
        if not self._stops:
            return text
        if self.stopped:
            return ""
        buf = self._pending + text
        hits = [(i, s) for s in self._stops if (i := buf.find(s)) >= 0]
        if hits:
            cut, self.matched = min(hits)
            self.stopped, self._pending = True, ""
            return buf[:cut]
        split = max(0, len(buf) - self._keep)
        self._pending = buf[split:]
        return buf[:split]

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return "" if self.stopped else out
