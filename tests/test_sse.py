"""The upstream SSE decoder: exact framing wherever the network splits the bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.claude.events import EventReader
from relay.reply import Finish, Text
from relay.sse import DONE, SSEDecoder, SSEEvent, encode_data, encode_event

STREAM = b'event: message_start\ndata: {"a":1}\n\n: comment\n\nevent: ping\ndata: {}\n\ndata: line1\ndata: line2\n\n'
EXPECTED = [SSEEvent("message_start", b'{"a":1}'), SSEEvent("ping", b"{}"), SSEEvent("message", b"line1\nline2")]


def _decode(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    out = [e for c in chunks for e in decoder.feed(c)]
    return out + decoder.flush()


@pytest.mark.parametrize("sep", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_line_endings(sep: bytes) -> None:
    assert _decode([STREAM.replace(b"\n", sep)]) == EXPECTED


@pytest.mark.parametrize("sep", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_split_at_every_byte(sep: bytes) -> None:
    data = STREAM.replace(b"\n", sep)
    assert _decode([data[i : i + 1] for i in range(len(data))]) == EXPECTED


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    assert _decode([b"data: x\r", b"\n\r", b"\n"]) == [SSEEvent("message", b"x")]


def test_multibyte_utf8_split_across_chunks() -> None:
    data = 'data: {"t":"héllo ✓"}\n\n'.encode()
    cut = data.index("✓".encode()) + 1
    assert _decode([data[:cut], data[cut:]]) == [SSEEvent("message", '{"t":"héllo ✓"}'.encode())]


def test_unterminated_event_at_end_is_flushed() -> None:
    assert _decode([b"event: message_stop\ndata: {}"]) == [SSEEvent("message_stop", b"{}")]


def test_unknown_fields_are_ignored() -> None:
    assert _decode([b"id: 7\nretry: 100\nfoo: bar\ndata:x\n\n"]) == [SSEEvent("message", b"x")]


def test_encoders_write_exact_frames() -> None:
    assert encode_data('{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_event("ping", "{}") == b"event: ping\ndata: {}\n\n"
    assert DONE == b"data: [DONE]\n\n"


def test_extra_blank_lines_and_comment_only_blocks() -> None:
    assert _decode([b"\n\n: ping\n\n\n\ndata: a\n\n\n"]) == [SSEEvent("message", b"a")]


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.text(max_size=30), min_size=1, max_size=12),
    compact=st.booleans(),
    padding=st.sampled_from(["", "   "]),
    cut=st.integers(min_value=0, max_value=2000),
    middle=st.sampled_from([b"", b": ping - 2026-04-30 13:58:01\n\n", b'event: ping\ndata: {"type":"ping"}\n\n']),
)
def test_fast_text_scan_reads_what_the_general_path_reads(
    texts: list[str], compact: bool, padding: str, cut: int, middle: bytes
) -> None:
    """Text deltas read by the fast scan give the same text as the line-by-line reader, whatever
    the JSON spacing, padding, escapes or where the network cut the bytes."""
    separators = (",", ":") if compact else (", ", ": ")
    frames = [
        b"event: content_block_delta\ndata: "
        + json.dumps(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}, separators=separators
        ).encode()
        + padding.encode()
        + b"\n\n"
        for t in texts
    ]
    stream = b"".join(frames[:1]) + middle + b"".join(frames[1:]) + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    cut = min(cut, len(stream))
    fast_reader, fast_decoder = EventReader(), SSEDecoder()
    fast = fast_reader.read(fast_decoder.take(stream[:cut])) + fast_reader.read(fast_decoder.take(stream[cut:]))
    slow_reader = EventReader()
    slow = [e for event in SSEDecoder().feed(stream) for e in slow_reader.feed(event)]
    assert (
        "".join(e.text for e in fast if isinstance(e, Text))
        == "".join(e.text for e in slow if isinstance(e, Text))
        == "".join(texts)
    )
    assert fast[-1] == Finish("end_turn") == slow[-1]


def test_a_text_delta_inside_another_block_is_not_read_as_one() -> None:
    """Only whole blocks are text deltas: an `event:` line in the middle of a block belongs to it."""
    delta = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}'
    stream = b"data: junk\n" + delta + b"\n\n" + delta + b'\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'
    fast = EventReader().read(SSEDecoder().take(stream))
    slow_reader = EventReader()
    slow = [e for event in SSEDecoder().feed(stream) for e in slow_reader.feed(event)]
    assert fast == slow == [Text("x"), Finish("end_turn")]
