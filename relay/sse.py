"""Server-sent events: an incremental decoder for upstream bytes and the frame encoder for clients."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class SSEEvent:
    """One dispatched event (WHATWG: `event` defaults to "message", data lines joined by LF)."""

    event: str
    data: str


class SSEDecoder:
    """Turns arbitrary byte chunks into events; lines may end in CR, LF or CRLF and split anywhere."""

    __slots__ = ("_buf", "_pending_cr", "_event", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._pending_cr = False  # the last chunk ended in CR; a leading LF now belongs to it
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume a chunk and return the events it completed."""
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = chunk.endswith(b"\r")
        data = self._buf + chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self._buf = data.split(b"\n")
        events: list[SSEEvent] = []
        for raw in lines:
            event = self._line(raw.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[SSEEvent]:
        """End of stream: an unterminated last line still counts, an undispatched event does not."""
        tail, self._buf = self._buf, b""
        if tail:
            self._line(tail.decode("utf-8", "replace"))
        event = self._line("")
        return [event] if event else []

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data and not self._event:
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


def encode_data(payload: str) -> bytes:
    """One `data:` frame; payload is compact JSON so it holds no newline."""
    return b"data: " + payload.encode() + b"\n\n"


def encode_event(event: str, payload: str) -> bytes:
    """A named frame, as the Anthropic streaming API sends them."""
    return b"event: " + event.encode() + b"\ndata: " + payload.encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
