"""What current agents send: model names they know, their probe, bookkeeping blocks, tool results
that carry images and name their tool."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from relay.demo import FakeClaude
from tests.conftest import API_KEY, MODEL, Relay, RelayFactory, continues
from tests.test_inputs import tiny_png

BILLING = "x-anthropic-billing-header: cc_version=2.1.332.abc; cc_entrypoint=sdk-cli; cch=00000;"


def _anthropic(relay: Relay) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=relay.url, api_key=API_KEY, max_retries=0, timeout=20)


async def test_model_aliases_are_served_and_listed(make_relay: RelayFactory, fake: FakeClaude) -> None:
    relay = await make_relay(model_aliases="gpt-5.5=claude-opus-5-5,gpt-5.5-codex=claude-sonnet-5-5")
    client = relay.openai()
    done = await client.chat.completions.create(model="gpt-5.5", messages=[{"role": "user", "content": "hi"}])
    assert done.model == "gpt-5.5" and fake.calls_named("completion")[-1].body["model"] == "claude-opus-5-5"
    listed = [m.id async for m in client.models.list()]
    assert {"gpt-5.5", "gpt-5.5-codex", "claude-sonnet-5-5", "claude-opus-5-5-think"} <= set(listed)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    async with aiohttp.ClientSession() as http, http.head(relay.url + "/api/hello") as r:
        assert r.status == 200  # Claude Code's probe before its first request


async def test_bookkeeping_system_blocks_never_reach_claude(relay: Relay, fake: FakeClaude) -> None:
    c = _anthropic(relay)
    system = [
        {"type": "text", "text": BILLING},
        {"type": "text", "text": "You are a careful agent.", "cache_control": {"type": "ephemeral"}},
    ]
    await c.messages.create(model=MODEL, max_tokens=100, system=system, messages=[{"role": "user", "content": "hi"}])  # type: ignore[arg-type]
    prompt = fake.calls_named("completion")[-1].body["prompt"]
    assert "You are a careful agent." in prompt and "billing" not in prompt and "cc_version" not in prompt
    await c.close()


async def test_a_tool_result_with_an_image_uploads_it_in_place_and_names_its_tool(relay: Relay, fake: FakeClaude) -> None:
    png = tiny_png()
    read = {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/tmp/shot.png"}}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png).decode()}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Image read."}, image]}
    messages = [
        {"role": "user", "content": "What is in shot.png?"},
        {"role": "assistant", "content": [read]},
        {"role": "user", "content": [result]},
    ]
    c = _anthropic(relay)
    await c.messages.create(model=MODEL, max_tokens=100, messages=messages)  # type: ignore[arg-type]
    await c.close()
    call = fake.calls_named("completion")[-1]
    assert "[tool result (Read, toolu_1)]\nImage read.\n[image 1]" in call.body["prompt"]
    uploads = [f for c in fake.calls_named("upload") for f in c.files]
    assert [u[2] for u in uploads] == [png] and call.body["files"]


GRAMMAR = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF'
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello from relay\n*** End Patch\n"
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files.",
    "format": {
        "type": "grammar",
        "syntax": "lark",
        "definition": 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF',
    },
}


async def test_a_freeform_tool_is_offered_and_its_call_comes_back_as_raw_text(relay: Relay, fake: FakeClaude) -> None:
    call = {"name": "apply_patch", "arguments": {"input": PATCH}}
    fake.reply = lambda model, conversation: (
        "Patched." if "[tool result (" in conversation else f"Patching.\n<tool_call>{json.dumps(call)}</tool_call>"
    )
    client = relay.openai()
    events = []
    async with client.responses.stream(model=MODEL, input="Add hello.txt", tools=[APPLY_PATCH]) as stream:  # type: ignore[list-item]
        async for event in stream:
            events.append(event.type)
        first = await stream.get_final_response()
    prompt = fake.calls_named("completion")[-1].body["prompt"]
    assert "apply_patch" in prompt and "begin_patch" in prompt  # offered with its grammar
    custom = [o for o in first.output if o.type == "custom_tool_call"]
    assert len(custom) == 1 and custom[0].name == "apply_patch" and custom[0].input == PATCH
    assert "response.custom_tool_call_input.delta" in events and "response.custom_tool_call_input.done" in events
    history: list[Any] = [
        {"role": "user", "content": "Add hello.txt"},
        *[o.model_dump(exclude_none=True) for o in first.output],
        {"type": "custom_tool_call_output", "call_id": custom[0].call_id, "output": "Done!"},
    ]
    final = await client.responses.create(model=MODEL, input=history, tools=[APPLY_PATCH], store=False)  # type: ignore[list-item]
    assert final.output_text == "Patched." and continues(fake)
    assert f"[tool result (apply_patch, {custom[0].call_id})]\nDone!" in fake.calls_named("completion")[-1].body["prompt"]


async def test_a_session_that_searched_for_tools_keeps_working(relay: Relay, fake: FakeClaude) -> None:
    search = {"type": "tool_search", "execution": "client", "description": "Find tools", "parameters": {"type": "object"}}
    client = relay.openai()
    history: list[Any] = [
        {"role": "user", "content": "Find a tool for the weather."},
        {
            "type": "tool_search_call",
            "call_id": "call_s1",
            "execution": "client",
            "status": "completed",
            "arguments": {"query": "weather"},
        },
        {
            "type": "tool_search_output",
            "call_id": "call_s1",
            "execution": "client",
            "status": "completed",
            "tools": [{"type": "function", "name": "get_weather", "description": "Weather by city", "parameters": {}}],
        },
        {"role": "user", "content": "Thanks."},
    ]
    done = await client.responses.create(model=MODEL, input=history, tools=[search], store=False)  # type: ignore[list-item]
    assert done.status == "completed"
    prompt = fake.calls_named("completion")[-1].body["prompt"]
    assert '"query": "weather"' in prompt and "get_weather: Weather by city" in prompt and "tool_search" in prompt


WEB_FETCH = {
    "name": "WebFetch",
    "description": "Fetch a web page",
    "input_schema": {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
    "defer_loading": True,
}
TOOL_SEARCH = {"name": "ToolSearch", "description": "Load more tools", "input_schema": {"type": "object", "properties": {}}}


async def test_deferred_tools_are_offered_once_loaded_and_their_calls_are_calls(relay: Relay, fake: FakeClaude) -> None:
    fetch = {"name": "WebFetch", "arguments": {"url": "https://example.org"}}
    fake.reply = lambda model, conversation: f"<tool_call>{json.dumps(fetch)}</tool_call>"
    c = _anthropic(relay)
    tools = [TOOL_SEARCH, WEB_FETCH]
    first = await c.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Fetch it"}], tools=tools)  # type: ignore[arg-type]
    prompt = fake.calls_named("completion")[-1].body["prompt"]
    assert "ToolSearch" in prompt and "WebFetch" not in prompt  # not offered before it is loaded ...
    calls = [b for b in first.content if b.type == "tool_use"]
    assert [b.name for b in calls] == ["WebFetch"] and first.stop_reason == "tool_use"  # ... and still a call, never markup
    loaded = [{"type": "tool_result", "tool_use_id": "toolu_s", "content": [{"type": "tool_reference", "tool_name": "WebFetch"}]}]
    messages = [
        {"role": "user", "content": "Fetch it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_s", "name": "ToolSearch", "input": {}}]},
        {"role": "user", "content": loaded},
    ]
    await c.messages.create(model=MODEL, max_tokens=100, messages=messages, tools=tools)  # type: ignore[arg-type]
    prompt = fake.calls_named("completion")[-1].body["prompt"]
    assert "[tool loaded] WebFetch - Fetch a web page" in prompt and '"required":["url"]' in prompt
    await c.close()


async def test_a_function_output_with_an_image_uploads_it(relay: Relay, fake: FakeClaude) -> None:
    png = tiny_png()
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    history: list[Any] = [
        {"role": "user", "content": "Look at shot.png"},
        {"type": "function_call", "call_id": "call_v1", "name": "view_image", "arguments": '{"path": "shot.png"}'},
        {"type": "function_call_output", "call_id": "call_v1", "output": [{"type": "input_image", "image_url": url}]},
    ]
    tool = {
        "type": "function",
        "name": "view_image",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    }
    done = await relay.openai().responses.create(model=MODEL, input=history, tools=[tool], store=False)  # type: ignore[list-item]
    assert done.status == "completed"
    call = fake.calls_named("completion")[-1]
    assert "[tool result (view_image, call_v1)]\n[image 1]" in call.body["prompt"] and call.body["files"]
    assert [f[2] for c in fake.calls_named("upload") for f in c.files] == [png]


async def test_chat_completions_custom_tools_take_and_return_raw_text(relay: Relay, fake: FakeClaude) -> None:
    call = {"name": "apply_patch", "arguments": {"input": PATCH}}
    fake.reply = lambda model, conversation: (
        "Patched." if "[tool result (" in conversation else f"<tool_call>{json.dumps(call)}</tool_call>"
    )
    tool = {"type": "custom", "custom": {"name": "apply_patch", "description": "Edit files", "format": APPLY_PATCH["format"]}}
    client = relay.openai()
    messages: list[Any] = [{"role": "user", "content": "Add hello.txt"}]
    done = await client.chat.completions.create(model=MODEL, messages=messages, tools=[tool])  # type: ignore[list-item]
    first = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.type == "custom" and first.custom.name == "apply_patch" and first.custom.input == PATCH  # type: ignore[union-attr]
    assert done.choices[0].finish_reason == "tool_calls"
    stream = await client.chat.completions.create(model=MODEL, messages=messages, tools=[tool], stream=True)  # type: ignore[list-item]
    deltas = [tc for chunk in [c async for c in stream] if chunk.choices for tc in chunk.choices[0].delta.tool_calls or []]
    assert deltas and deltas[0].model_dump()["custom"] == {"name": "apply_patch", "input": PATCH}
    messages += [
        done.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": first.id, "content": "Done!"},
    ]
    final = await client.chat.completions.create(model=MODEL, messages=messages, tools=[tool])  # type: ignore[list-item]
    assert final.choices[0].message.content == "Patched." and continues(fake)
