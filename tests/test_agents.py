"""What current agents send: model names they know, their probe, bookkeeping blocks, tool results
that carry images and name their tool."""

from __future__ import annotations

import base64

import aiohttp
import anthropic
import openai
import pytest

from relay.demo import FakeClaude
from tests.conftest import API_KEY, MODEL, Relay, RelayFactory
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
