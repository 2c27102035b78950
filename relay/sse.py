"""Server-sent events: an incremental decoder for upstream bytes and the frame encoder for clients."""

from __future__ import annotations

from typing import NamedTuple


class SSEEvent(NamedTuple):
    """One dispatched event (WHATWG: `event` defaults to "message", data lines joined by LF)."""

    event: str
    data: bytes


class SSEDecoder:
    """Turns arbitrary byte chunks into events; lines may end in CR, LF or CRLF and split anywhere.

    Works on whole blank-line-terminated blocks of bytes: an upstream chunk holds many events, and
    splitting it once beats walking it line by line.
    """

    __slots__ = ("_buf", "_pending_cr")

    def __init__(self) -> None:
        self._buf = b""
        self._pending_cr = False  # the last chunk ended in CR; a leading LF now belongs to it

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume a chunk and return the events it completed."""
        return blocks(self.take(chunk))

    def take(self, chunk: bytes) -> bytes:
        """Consume a chunk and return the complete events it finished as raw blocks (LF line
        ends, separated by blank lines, without the last one), for readers with their own scan."""
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = chunk.endswith(b"\r")
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        data = self._buf + chunk if self._buf else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._buf = data
            return b""
        self._buf = data[end + 2 :]
        return data[:end]

    def flush(self) -> list[SSEEvent]:
        """End of stream: an unterminated last event still counts."""
        tail, self._buf = self._buf, b""
        return _events(tail.split(b"\n")) if tail.strip() else []


_NAMES: dict[bytes, str] = {}


def blocks(data: bytes) -> list[SSEEvent]:
    """Events from complete blank-line-separated blocks. The usual block, one `event:` line and
    one `data:` line (or a lone `data:` line), is read with two searches; anything else (comments,
    several data lines, other fields) goes through the line-by-line reader."""
    events: list[SSEEvent] = []
    for block in data.split(b"\n\n"):
        if block.startswith(b"event: "):
            nl = block.find(b"\n")
            if nl > 0 and block.startswith(b"data: ", nl + 1) and block.find(b"\n", nl + 1) < 0:
                raw = block[7:nl]
                name = _NAMES.get(raw)
                if name is None:
                    name = raw.decode("utf-8", "replace")
                    if len(_NAMES) < 256:  # event names are few; a hostile stream cannot grow this
                        _NAMES[raw] = name
                events.append(SSEEvent(name, block[nl + 7 :]))
                continue
        elif block.startswith(b"data: ") and b"\n" not in block:
            events.append(SSEEvent("message", block[6:]))
            continue
        if block:
            events.extend(_events(block.split(b"\n")))
    return events


def _events(lines: list[bytes]) -> list[SSEEvent]:
    """Events from complete lines; a blank line (or the end) dispatches."""
    events: list[SSEEvent] = []
    name = ""
    data: list[bytes] = []
    for line in lines:
        if not line:
            if data or name:
                events.append(SSEEvent(name or "message", b"\n".join(data)))
                name, data = "", []
            continue
        if line[0] == 58:  # ":" starts a comment
            continue
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if data or name:
        events.append(SSEEvent(name or "message", b"\n".join(data)))
    return events


def encode_data(payload: str) -> bytes:
    """One `data:` frame; payload is compact JSON so it holds no newline."""
    return b"data: " + payload.encode() + b"\n\n"


def encode_event(event: str, payload: str) -> bytes:
    """A named frame, as the Anthropic streaming API sends them."""
    return b"event: " + event.encode() + b"\ndata: " + payload.encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
