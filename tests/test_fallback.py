"""Fallback providers answer when no claude.ai account can, through both client APIs."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from loguru import logger

from relay.config import Fallback
from tests.conftest import API_KEY, HI, MODEL, Relay, RelayFactory, eventually, session_key
from tests.fake_providers import FakeAnthropic, FakeOpenAI, FakeProvider

OPENAI_KEY = "sk-openai-fallback-secret-123"
ANTHROPIC_KEY = "sk-ant-api03-fallback-secret-456"


async def _serve(aiohttp_server: Any, provider: FakeProvider) -> str:
    server = await aiohttp_server(provider.app)
    return str(server.make_url("")).rstrip("/")


def _dead_pool(fake: Any) -> None:
    for n in (1, 2, 3):
        fake.script(session_key(n), "rate_limited", resets_at=time.time() + 600)


async def _relay(make_relay: RelayFactory, aiohttp_server: Any, *providers: tuple[str, FakeProvider], **kw: Any) -> Relay:
    fallbacks = []
    for name, provider in providers:
        url = await _serve(aiohttp_server, provider)
        kind = "openai" if isinstance(provider, FakeOpenAI) else "anthropic"
        fallbacks.append(
            Fallback(
                name=name,
                url=url + "/v1" if kind == "openai" else url,
                key=OPENAI_KEY if kind == "openai" else ANTHROPIC_KEY,  # type: ignore[arg-type]
                model=f"{kind}-model",
                type=kind,
            )
        )
    return await make_relay(fallbacks=tuple(fallbacks), **kw)


def _anthropic(relay: Relay) -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(base_url=relay.url, api_key=API_KEY, max_retries=0)
    relay.clients.append(client)  # type: ignore[arg-type]
    return client


async def test_openai_route_uses_first_fallback_when_pool_is_rate_limited(
    make_relay: RelayFactory, fake, aiohttp_server: Any
) -> None:
    _dead_pool(fake)
    primary = FakeOpenAI("from primary")
    relay = await _relay(make_relay, aiohttp_server, ("primary", primary), ("backup", FakeOpenAI("from backup")))
    raw = await relay.openai().chat.completions.with_raw_response.create(model=MODEL, messages=HI)
    done = raw.parse()
    assert done.choices[0].message.content == "from primary"
    assert raw.headers["x-relay-provider"] == "primary"
    headers, body = primary.requests[0]
    assert headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    assert body["model"] == "openai-model" and body["messages"] == HI
    stream = await relay.openai().chat.completions.create(model=MODEL, messages=HI, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "from primary"


async def test_failing_fallback_falls_through_to_the_next(make_relay: RelayFactory, fake, aiohttp_server: Any) -> None:
    _dead_pool(fake)
    broken = FakeOpenAI()
    broken.fail_status = 500
    relay = await _relay(make_relay, aiohttp_server, ("broken", broken), ("backup", FakeAnthropic("from backup")))
    done = await relay.openai().chat.completions.create(model=MODEL, messages=HI)
    assert done.choices[0].message.content == "from backup"
    assert len(broken.requests) == 1
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{relay.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}) as r:
            metrics = await r.text()
    assert 'relay_fallbacks_total{outcome="failed",provider="broken"} 1.0' in metrics
    assert 'relay_fallbacks_total{outcome="answered",provider="backup"} 1.0' in metrics


async def test_openai_route_through_anthropic_fallback(make_relay: RelayFactory, fake, aiohttp_server: Any) -> None:
    _dead_pool(fake)
    provider = FakeAnthropic("translated answer")
    relay = await _relay(make_relay, aiohttp_server, ("claude-api", provider))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    done = await relay.openai().chat.completions.create(model=MODEL, messages=messages)
    assert done.choices[0].message.content == "translated answer" and done.choices[0].finish_reason == "stop"
    headers, body = provider.requests[0]
    assert headers["x-api-key"] == ANTHROPIC_KEY and headers["anthropic-version"]
    assert body["system"] == "Be brief." and body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert body["max_tokens"] > 0
    stream = await relay.openai().chat.completions.create(model=MODEL, messages=messages, stream=True)
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "translated answer"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_anthropic_route_through_both_kinds(make_relay: RelayFactory, fake, aiohttp_server: Any) -> None:
    _dead_pool(fake)
    for provider in (FakeAnthropic("native"), FakeOpenAI("via openai")):
        relay = await _relay(make_relay, aiohttp_server, ("p", provider))
        client = _anthropic(relay)
        msg = await client.messages.create(model=MODEL, max_tokens=100, messages=HI)
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=HI) as stream:
            text = "".join([t async for t in stream.text_stream])
        assert msg.content[0].text == text == provider.text  # type: ignore[union-attr]


async def test_tool_calls_pass_through_translation(make_relay: RelayFactory, fake, aiohttp_server: Any) -> None:
    _dead_pool(fake)
    provider = FakeAnthropic(tool_call=("get_weather", {"city": "Paris"}))
    relay = await _relay(make_relay, aiohttp_server, ("p", provider))
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
        }
    ]
    done = await relay.openai().chat.completions.create(model=MODEL, messages=HI, tools=tools)  # type: ignore[arg-type]
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert done.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert provider.requests[0][1]["tools"][0]["name"] == "get_weather"


async def test_no_fallback_while_an_account_can_serve(make_relay: RelayFactory, fake, aiohttp_server: Any) -> None:
    fake.script(session_key(1), "rate_limited", resets_at=time.time() + 600)
    provider = FakeOpenAI()
    relay = await _relay(make_relay, aiohttp_server, ("p", provider))
    for _ in range(3):
        raw = await relay.openai().chat.completions.with_raw_response.create(model=MODEL, messages=HI)
        assert raw.headers["x-relay-provider"] == "claude.ai"
    assert not provider.requests


@pytest.mark.parametrize("mode", ["off", "when_pool_unavailable"])
async def test_mode_off_and_everything_failing_keep_the_pool_error(
    make_relay: RelayFactory, fake, aiohttp_server: Any, mode: str
) -> None:
    _dead_pool(fake)
    provider = FakeOpenAI()
    provider.fail_status = 503
    relay = await _relay(make_relay, aiohttp_server, ("p", provider), fallback_mode=mode)
    with pytest.raises(openai.RateLimitError):
        await relay.openai().chat.completions.create(model=MODEL, messages=HI)
    assert len(provider.requests) == (0 if mode == "off" else 1)


async def test_fallback_keys_never_appear(make_relay: RelayFactory, fake, aiohttp_server: Any) -> None:
    _dead_pool(fake)
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG")
    try:
        broken = FakeOpenAI()
        broken.fail_status = 401
        relay = await _relay(make_relay, aiohttp_server, ("a", broken), ("b", FakeAnthropic()))
        raw = await relay.openai().chat.completions.with_raw_response.create(model=MODEL, messages=HI)
        text = raw.http_response.text + json.dumps(dict(raw.headers))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{relay.url}/stats", headers={"Authorization": f"Bearer {API_KEY}"}) as r:
                text += await r.text()
        await eventually(lambda: any("fallback:b" in line for line in lines))
    finally:
        logger.remove(sink)
    everything = text + "".join(lines)
    assert OPENAI_KEY not in everything and ANTHROPIC_KEY not in everything
