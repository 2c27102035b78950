"""Hardening: bad input gets a clear OpenAI-style error with the right status, and the relay keeps serving."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import AUTH, HI, MODEL, Relay, RelayFactory, session_key

OK_BODY = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}


async def _post(
    relay: Relay, data: Any, *, raw: bytes | None = None, path: str = "/v1/chat/completions"
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with aiohttp.ClientSession() as http:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": data}
        async with http.post(relay.url + path, headers=AUTH, **kwargs) as r:
            return r.status, await r.json(), {k.lower(): v for k, v in r.headers.items()}


async def _still_serves(relay: Relay) -> None:
    status, body, _ = await _post(relay, OK_BODY)
    assert status == 200 and body["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
    ids=["empty", "broken", "array", "binary"],
)
async def test_bad_json_is_400(relay: Relay, fake, raw: bytes, needle: str) -> None:
    status, body, headers = await _post(relay, None, raw=raw)
    assert status == 400
    assert needle in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    assert headers["x-request-id"]
    assert not fake.calls_named("completion")
    await _still_serves(relay)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "claude-sonnet-4-6", "messages": []}, "messages"),
        ({"model": "claude-sonnet-4-6", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": 42}]}, "messages.0.content"),
        ({"model": "claude-sonnet-4-6", "messages": "hello"}, "messages"),
        ({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
        ({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}], "n": 3}, "n"),
        ({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": ""}]}, "messages"),
        # Each stop sequence is looked for in every streamed chunk: thousands would hold the event loop.
        ({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}], "stop": ["s"] * 17}, "stop"),
        ({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}], "stop": "s" * 1001}, "stop"),
    ],
    ids=[
        *("no-model", "no-messages", "bad-role", "bad-content", "messages-string", "stream-type", "n", "all-empty"),
        *("stops", "stop-length"),
    ],
)
async def test_invalid_requests_name_the_field(relay: Relay, fake, body: dict[str, Any], field: str) -> None:
    status, answer, _ = await _post(relay, body)
    assert status == 400
    assert answer["error"]["message"].startswith(field)
    assert not fake.calls_named("completion")


async def test_too_many_stop_sequences_are_an_error_the_openai_sdk_reads(relay: Relay, fake) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await relay.openai().chat.completions.create(model=MODEL, messages=HI, stop=["s"] * 17)
    assert info.value.param == "stop" and "at most 16" in info.value.message
    assert not fake.calls_named("completion")


async def test_an_error_body_nested_too_deeply_is_read_as_any_other_failure(make_relay: RelayFactory, fake) -> None:
    """Python's json module raises RecursionError, not ValueError, past its depth: a 500 whose
    body nests 5,000 arrays must fail over like any 500, not crash the request."""
    fake.script(session_key(1), "deep_json")
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    done = await relay.openai().chat.completions.create(model=MODEL, messages=HI)
    assert done.choices[0].message.content
    asked = [c.session_key for c in fake.calls_named("completion")]
    assert session_key(1) in asked and asked[-1] == session_key(2)


async def test_huge_body_is_413_and_server_lives(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(max_body_size=64 * 1024)
    big = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x" * 200_000}]}
    status, body, _ = await _post(relay, big)
    assert status == 413
    assert body["error"]["code"] == "request_too_large"
    assert not fake.calls_named("completion")
    await _still_serves(relay)


async def test_unknown_route_and_method_are_json(relay: Relay) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{relay.url}/v1/nothing-here", headers=AUTH) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
            assert r.headers["x-request-id"]
        async with http.get(f"{relay.url}/v1/chat/completions", headers=AUTH) as r:
            assert r.status == 405 and (await r.json())["error"]["type"] == "invalid_request_error"
        async with http.get(f"{relay.url}/nope") as r:
            assert r.status == 404
