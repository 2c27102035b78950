"""The Anthropic Messages API through the relay, driven by the official anthropic client."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
import anthropic
import pytest

from relay.server.keys import settings_key
from tests.conftest import API_KEY, MODEL, Relay, RelayFactory, session_key
from tests.test_inputs import tiny_png

HI = [{"role": "user", "content": "hi there"}]


def client(relay: Relay, prefix: str = "", key: str = API_KEY) -> anthropic.AsyncAnthropic:
    c = anthropic.AsyncAnthropic(base_url=relay.url + prefix, api_key=key, max_retries=0, timeout=20)
    relay.clients.append(c)  # type: ignore[arg-type]
    return c


def script_all(fake: Any, **kw: Any) -> None:
    for n in (1, 2, 3):
        fake.script(session_key(n), **kw)


async def test_non_stream_message(relay: Relay, fake) -> None:
    script_all(fake, text="Hello from Claude")
    msg = await client(relay).messages.create(model=MODEL, max_tokens=100, messages=HI, system="Be kind.")
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Hello from Claude"  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    prompt = fake.calls_named("completion")[0].body["prompt"]
    assert prompt == "System: Be kind.\n\nHuman: hi there"


async def test_stream_with_the_sync_helper(relay: Relay, fake) -> None:
    script_all(fake, text="one two three")

    def run() -> tuple[str, Any]:
        sync = anthropic.Anthropic(base_url=relay.url, api_key=API_KEY, max_retries=0)
        with sync.messages.stream(model=MODEL, max_tokens=100, messages=HI) as stream:
            text = "".join(stream.text_stream)
            return text, stream.get_final_message()

    text, final = await asyncio.to_thread(run)
    assert text == "one two three"
    assert final.content[0].text == "one two three"
    assert final.stop_reason == "end_turn"


async def test_stream_event_sequence_is_exact(relay: Relay, fake) -> None:
    script_all(fake, text="a b", thinking="hmm")
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "stream": True,
        "messages": HI,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{relay.url}/v1/messages", json=body, headers={"x-api-key": API_KEY}) as r:
            raw = (await r.read()).decode()
    names = [line.removeprefix("event: ") for line in raw.splitlines() if line.startswith("event: ")]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    blocks = [json.loads(line.removeprefix("data: ")) for line in raw.splitlines() if '"content_block_start"' in line]
    assert [b["content_block"]["type"] for b in blocks] == ["thinking", "text"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2


async def test_thinking_blocks(relay: Relay, fake) -> None:
    script_all(fake, text="Answer.", thinking="Let me see.")
    msg = await client(relay).messages.create(
        model=MODEL, max_tokens=2000, messages=HI, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "Let me see."  # type: ignore[union-attr]
    params = fake.calls_named("completion")[0].body["create_conversation_params"]
    assert params["paprika_mode"] == "extended"


async def test_stop_sequences_are_bounded(relay: Relay, fake) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await client(relay).messages.create(model=MODEL, max_tokens=10, messages=HI, stop_sequences=["s"] * 17)
    assert "stop_sequences" in info.value.message and not fake.calls_named("completion")
    done = await client(relay).messages.create(model=MODEL, max_tokens=10, messages=HI, stop_sequences=["s"] * 16)
    assert done.content


async def test_thinking_display_omitted_keeps_the_blocks_without_their_text(relay: Relay, fake) -> None:
    """Claude Code asks for `display: omitted`: thinking blocks come back empty, as Anthropic's API sends them."""
    script_all(fake, text="Answer.", thinking="Let me see.")
    thinking = {"type": "adaptive", "display": "omitted"}
    msg = await client(relay).messages.create(model=MODEL, max_tokens=2000, messages=HI, thinking=thinking)  # type: ignore[arg-type]
    assert [(b.type, getattr(b, "thinking", None)) for b in msg.content] == [("thinking", ""), ("text", None)]
    async with client(relay).messages.stream(model=MODEL, max_tokens=2000, messages=HI, thinking=thinking) as stream:  # type: ignore[arg-type]
        kinds = [e.delta.type async for e in stream if e.type == "content_block_delta"]
        final = await stream.get_final_message()
    assert "thinking_delta" not in kinds and "text_delta" in kinds
    assert [b.type for b in final.content] == ["thinking", "text"] and final.content[1].text == "Answer."  # type: ignore[union-attr]
    assert fake.calls_named("completion")[-1].body["create_conversation_params"]["paprika_mode"] == "extended"


async def test_think_model_suffix_also_enables_thinking(relay: Relay, fake) -> None:
    script_all(fake, text="x", thinking="y")
    async with client(relay).messages.stream(model=MODEL + "-think", max_tokens=100, messages=HI) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]


async def test_image_block_is_uploaded(relay: Relay, fake) -> None:
    png = tiny_png()
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png).decode()}},
        {"type": "text", "text": "what is this?"},
    ]
    await client(relay).messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": content}])
    assert fake.calls_named("upload")[0].files == [("image_1.png", "image/png", png)]


async def test_stop_sequences(relay: Relay, fake) -> None:
    script_all(fake, text="alpha beta END gamma")
    msg = await client(relay).messages.create(model=MODEL, max_tokens=100, messages=HI, stop_sequences=["END"])
    assert msg.content[0].text == "alpha beta "  # type: ignore[union-attr]
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "END")


async def test_count_tokens(relay: Relay) -> None:
    counted = await client(relay).messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x" * 400}])
    assert counted.input_tokens >= 100


async def test_hf_prefix(relay: Relay) -> None:
    msg = await client(relay, "/hf").messages.create(model=MODEL, max_tokens=10, messages=HI)
    assert msg.content


async def test_errors_are_anthropic_shaped(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(sessions=session_key(1))
    with pytest.raises(anthropic.AuthenticationError) as auth:
        await client(relay, key="wrong").messages.create(model=MODEL, max_tokens=10, messages=HI)
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        await client(relay).messages.create(model="gpt-4o", max_tokens=10, messages=HI)
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client(relay).messages.create(model=MODEL, max_tokens=0, messages=HI)
    assert bad.value.body["type"] == "error" and "max_tokens" in bad.value.message  # type: ignore[index]
    fake.script(session_key(1), "rate_limited", resets_at=time.time() + 300)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client(relay).messages.create(model=MODEL, max_tokens=10, messages=HI)
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


async def test_failure_after_output_is_an_error_event(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(sessions=session_key(1))
    fake.script(session_key(1), "drop", text="a b c d e", drop_after=2)
    got: list[str] = []
    with pytest.raises(anthropic.APIError) as info:
        async with client(relay).messages.stream(model=MODEL, max_tokens=100, messages=HI) as stream:
            async for text in stream.text_stream:
                got.append(text)
    assert "".join(got) == "a b "
    assert "mid-answer" in str(info.value)


async def test_model_discovery_in_anthropic_shape(relay: Relay) -> None:
    c = client(relay)
    first = await c.models.list(limit=2)
    assert [m.type for m in first.data] == ["model", "model"] and first.has_more
    assert first.data[0].id == "claude-sonnet-5-5" and first.data[0].display_name == "Claude Sonnet 5.5"
    ids = [m.id async for m in await c.models.list(limit=3)]  # the SDK pages through after_id
    assert ids == list(relay.app[settings_key].served_models)
    one = await c.models.retrieve("claude-opus-4-6-think")
    assert one.display_name == "Claude Opus 4.6 (thinking)"
    with pytest.raises(anthropic.NotFoundError):
        await c.models.retrieve("gpt-4o")
