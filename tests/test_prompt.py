"""Prompt flattening and upstream event reading, as pure functions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay.chat_api.adapter import ChatCompletions
from relay.claude.events import EventReader
from relay.claude.prompt import HISTORY_FILE, NO_ARTIFACTS_NOTE, build_prompt
from relay.errors import InvalidRequest
from relay.reply import Finish, StopCutter, Text, Thinking
from relay.sse import SSEEvent


def _prompt(messages: list[dict[str, Any]], **kw: Any):  # type: ignore[no-untyped-def]
    chat = ChatCompletions("think_tags").parse({"model": "m", "messages": messages}).chat
    opts = {"no_role_prefix": False, "disable_artifacts": False, "max_history": 10_000, **kw}
    return build_prompt(chat.turns, **opts)


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": "Use English."},
    {"role": "user", "content": "What is 2+2?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "calc", "arguments": '{"x":"2+2"}'}}],
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "calc", "content": "4"},
    {"role": "assistant", "content": "It is 4."},
    {"role": "user", "content": [{"type": "text", "text": "And 3+3?"}]},
]


def test_roles_are_prefixed_in_order() -> None:
    text = _prompt(CONVERSATION).text
    assert text == (
        "System: Be brief.\n\n"
        "System: Use English.\n\n"
        "Human: What is 2+2?\n\n"
        'Assistant: <tool_call>{"name": "calc", "arguments": {"x": "2+2"}}</tool_call>\n\n'
        "Human: [tool result (calc, call_1)]\n4\n\n"
        "Assistant: It is 4.\n\n"
        "Human: And 3+3?"
    )


def test_no_role_prefix() -> None:
    text = _prompt(CONVERSATION[:3], no_role_prefix=True).text
    assert text == "Be brief.\n\nUse English.\n\nWhat is 2+2?"


def test_disable_artifacts_adds_the_note() -> None:
    assert _prompt(CONVERSATION[2:3], disable_artifacts=True).text == f"System: {NO_ARTIFACTS_NOTE}\n\nHuman: What is 2+2?"


def test_long_history_becomes_an_attachment() -> None:
    long = [
        {"role": "user", "content": "x" * 600},
        {"role": "assistant", "content": "y" * 600},
        {"role": "user", "content": "last?"},
    ]
    prompt = _prompt(long, max_history=1000)
    assert prompt.text.endswith("Human: last?")
    assert HISTORY_FILE in prompt.text and len(prompt.text) < 400
    history = prompt.attachments[0]
    assert history.file_name == HISTORY_FILE
    assert history.content == f"Human: {'x' * 600}\n\nAssistant: {'y' * 600}"
    assert history.wire()["file_size"] == len(history.content)


def test_short_history_stays_inline() -> None:
    assert not _prompt(CONVERSATION).attachments


@pytest.mark.parametrize(
    ("part", "needle"),
    [
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "input_audio parts are not supported"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}, "base64"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}, "not a png"),
        ({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}, "data: URL or an http(s) URL"),
        ({"type": "file", "file": {"file_id": "file-123"}}, "file_data"),
        (
            {"type": "file", "file": {"file_data": "data:application/zip;base64,UEsDBA==", "filename": "a.zip"}},
            "unsupported file type",
        ),
    ],
    ids=["audio", "bad-base64", "not-image", "scheme", "file-id", "zip"],
)
def test_bad_parts_say_which_part(part: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        _prompt([{"role": "user", "content": [{"type": "text", "text": "see"}, part]}])
    assert needle in info.value.message
    assert info.value.message.startswith("messages.0.content.1")


def _read(events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    reader = EventReader()
    return [r for name, data in events for r in reader.feed(SSEEvent(name, json.dumps(data).encode()))]


def test_artifact_block_becomes_markdown() -> None:
    args = json.dumps(
        {"id": "a", "type": "application/vnd.ant.code", "title": "Hello", "language": "python", "content": "print(1)"}
    )
    out = _read(
        [
            (
                "content_block_start",
                {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "name": "artifacts"}},
            ),
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": args[:10]}},
            ),
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": args[10:]}},
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ]
    )
    assert out == [Text("\n\n**Hello**\n\n```python\nprint(1)\n```\n\n")]


def test_reader_maps_deltas_and_ignores_unknown_events() -> None:
    out = _read(
        [
            ("message_start", {"type": "message_start", "message": {}}),
            ("brand_new_event", {"type": "brand_new_event", "x": 1}),
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
            ),
            ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "hi"}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "citation_start_delta"}}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}}),
            ("message_stop", {"type": "message_stop"}),
        ]
    )
    assert out == [Thinking("hm"), Text("hi"), Finish("max_tokens")]


def test_legacy_completion_events() -> None:
    out = _read(
        [
            ("completion", {"completion": "Hel", "stop_reason": None}),
            ("completion", {"completion": "lo", "stop_reason": "stop_sequence"}),
        ]
    )
    assert out == [Text("Hel"), Text("lo"), Finish("end_turn")]


def test_stop_cutter_across_pieces() -> None:
    cutter = StopCutter(["END"])
    out = "".join(cutter.feed(p) for p in ["abc E", "N", "Dxyz"]) + cutter.flush()
    assert out == "abc " and cutter.stopped
