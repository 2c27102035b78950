"""Hostile input, faulty accounts and early hang-ups: each defect found from outside has a test."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from loguru import logger

from relay.claude.images import fetch_image
from relay.claude.prompt import RemoteImage
from relay.server.keys import upstream_key
from tests.conftest import API_KEY, AUTH, HI, MODEL, Relay, RelayFactory, eventually, session_key
from tests.test_cli import _relay
from tests.test_inputs import tiny_png

CHAT = "/v1/chat/completions"


async def _raw(port: int, data: bytes, *, read: bool = True) -> bytes:
    """Bytes on a plain socket, as a broken or hostile client sends them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10) if read else b""
    writer.close()
    return answer


async def _post(
    relay: Relay, body: Any = None, *, data: bytes | None = None, path: str = CHAT, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
        async with http.post(relay.url + path, headers={**AUTH, **(headers or {})}, **kwargs) as r:
            return r.status, await r.json(content_type=None)


async def test_deep_nesting_is_400_before_anything_else(relay: Relay, fake) -> None:
    for depth in (5000, 100):
        body = f'{{"model": "{MODEL}", "messages": {"[" * depth}{"]" * depth}}}'
        status, answer = await _post(relay, data=body.encode(), headers={"Content-Type": "application/json"})
        message = answer["error"]["message"]
        assert status == 400 and ("nested" in message or "depth" in message), answer
    assert not fake.calls_named("completion")


@pytest.mark.parametrize(
    ("path", "extra", "field"),
    [
        (CHAT, {"tool_choice": {"type": "function", "function": None}}, "tool_choice"),
        (CHAT, {"tool_choice": {"type": "function", "function": "f"}}, "tool_choice"),
        (CHAT, {"tool_choice": {"function": {"name": ["f"]}}}, "tool_choice"),
        ("/v1/messages", {"tool_choice": {"type": "tool", "name": ["f"]}}, "tool_choice"),
    ],
)
async def test_odd_tool_choice_shapes_are_400(relay: Relay, fake, path: str, extra: dict[str, Any], field: str) -> None:
    tools = (
        [{"type": "function", "function": {"name": "f", "parameters": {}}}]
        if path == CHAT
        else [{"name": "f", "input_schema": {}}]
    )
    body = {"model": MODEL, "messages": HI, "max_tokens": 10, "tools": tools, **extra}
    status, answer = await _post(relay, body, path=path)
    assert status == 400, answer
    message = answer["error"]["message"]
    assert message.startswith(field), message
    assert not fake.calls_named("completion")


async def test_body_that_is_not_the_gzip_it_claims_is_400(relay: Relay, fake) -> None:
    status, answer = await _post(
        relay, data=json.dumps({"model": MODEL, "messages": HI}).encode(), headers={"Content-Encoding": "gzip"}
    )
    assert status == 400 and "could not be read" in answer["error"]["message"]
    status, answer = await _post(
        relay, data=gzip.compress(json.dumps({"model": MODEL, "messages": HI}).encode()), headers={"Content-Encoding": "gzip"}
    )
    assert status == 200, answer


async def test_non_utf8_api_key_is_401_not_500(relay: Relay) -> None:
    port = int(relay.url.rsplit(":", 1)[1])
    for header in (b"Authorization: Bearer \xff\xfe\xfd", b"x-api-key: \xc3\x28"):
        raw = await _raw(port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nConnection: close\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 401"), raw[:200]


async def test_lone_surrogates_never_reach_claude(relay: Relay, fake) -> None:
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "a \\ud800 b"}]}' % MODEL.encode()
    status, answer = await _post(relay, data=body, headers={"Content-Type": "application/json"})
    assert status == 400 and "surrogate" in answer["error"]["message"]
    assert not fake.calls_named("completion")


async def test_early_hang_up_leaves_no_chat_behind(make_relay: RelayFactory, fake) -> None:
    for n in (1, 2, 3):
        # claude.ai takes its time to create the chat and answer; the client does not wait.
        fake.script(session_key(n), accept_delay=0.5)
    relay = await make_relay()
    await eventually(lambda: all(a.org_id for a in relay.pool.accounts))
    async with aiohttp.ClientSession() as http:
        for _ in range(6):
            with pytest.raises(asyncio.TimeoutError):
                async with asyncio.timeout(0.1):
                    await http.post(relay.url + CHAT, json={"model": MODEL, "messages": HI, "stream": True}, headers=AUTH)
    await eventually(lambda: len(fake.calls_named("completion")) == 6)
    # The deletes arrive before the chats exist; they are retried until the chats are gone.
    await eventually(lambda: len(fake.deleted) == 6 and not fake.conversations, timeout=15)


async def test_hang_ups_as_answers_start_are_499_not_500(relay: Relay, fake) -> None:
    errors: list[str] = []
    sink = logger.add(lambda m: errors.append(str(m)), level="ERROR")
    port = int(relay.url.rsplit(":", 1)[1])
    body = json.dumps({"model": MODEL, "messages": HI, "stream": True}).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (API_KEY.encode(), len(body))
    )
    try:
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + body)
            await reader.readexactly(12)  # the status line has begun: the answer is starting
            writer.transport.abort()
        await eventually(lambda: sum(a.in_flight_here for a in relay.pool.accounts) == 0)
        async with aiohttp.ClientSession() as http, http.get(relay.url + "/metrics", headers=AUTH) as r:
            metrics = await r.text()
    finally:
        logger.remove(sink)
    assert not errors, errors[:2]
    assert 'status="500"' not in metrics


async def test_control_characters_never_forge_log_lines(relay: Relay) -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), format="{message}", level="INFO")
    try:
        async with aiohttp.ClientSession() as http:
            body = {"model": "gpt\r\n2026-01-01 | INFO | forged", "messages": HI}
            async with http.post(relay.url + CHAT, json=body, headers={**AUTH, "x-request-id": "id\tforged"}) as r:
                assert r.status == 404
                assert r.headers["x-request-id"].startswith("req_")  # not the client's forged id
    finally:
        logger.remove(sink)
    text = "".join(lines)
    assert "\nforged" not in text and "2026-01-01 | INFO | forged" not in text.splitlines()[0:1]
    assert not any(line.startswith("2026-01-01") for line in text.splitlines())


async def test_a_reset_time_in_the_past_is_no_reset_time(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), "rate_limited", resets_at=time.time() - 3600)
    relay = await make_relay(sessions=session_key(1))
    status, _ = await _post(relay, {"model": MODEL, "messages": HI})
    assert status == 429
    account = relay.pool.accounts[0]
    assert account.state.value == "cooling" and account.until is not None and account.until > time.time() + 3000


async def test_bad_block_names_the_field_the_client_sent(relay: Relay) -> None:
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 5}]}
    status, answer = await _post(relay, body, path="/v1/messages")
    assert status == 400
    assert answer["error"]["message"].startswith("messages.1.content:") and ".str" not in answer["error"]["message"]


async def test_image_fetch_uses_the_address_it_checked(aiohttp_server: Any, relay: Relay) -> None:
    """The name is resolved once, checked, and the fetch is pinned to that address: a second
    lookup (DNS rebinding) cannot send it elsewhere. The name here resolves nowhere else."""
    app = web.Application()

    async def cat(_: web.Request) -> web.Response:
        return web.Response(body=tiny_png(), content_type="image/png")

    app.router.add_get("/cat.png", cat)
    server = await aiohttp_server(app)
    url = f"http://pinned.invalid:{server.port}/cat.png"

    async def resolve(host: str) -> list[str]:
        assert host == "pinned.invalid"
        return ["127.0.0.1"]

    upload = await fetch_image(
        relay.app[upstream_key], RemoteImage(url, "messages.0.content.0", 1), allow_private=True, resolve=resolve
    )
    assert upload.data == tiny_png()


async def test_slow_clients_are_dropped_and_protocol_errors_are_json(fake) -> None:  # type: ignore[no-untyped-def]
    env = {
        "SESSIONS": session_key(1),
        "CLAUDE_BASE_URL": str(fake.server.make_url("")).rstrip("/"),
        "APIKEY": API_KEY,
        "REQUEST_HEADER_TIMEOUT": "1",
        "REQUEST_BODY_TIMEOUT": "1",
    }
    async with _relay(env=env) as (port, _):
        # Half a request head, then silence: the connection is closed (EOF), not kept for ever.
        started = time.monotonic()
        raw = await _raw(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert raw == b"" and time.monotonic() - started < 5
        # A head, then a body that never comes: 408 in JSON.
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\n{"
            % API_KEY.encode()
        )
        raw = await _raw(port, head)
        assert raw.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in raw
        # Protocol errors aiohttp answers itself: JSON in the OpenAI shape.
        for junk in (
            b"NOT HTTP AT ALL\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" % API_KEY.encode(),
        ):
            raw = await _raw(port, junk)
            head_part, _, body = raw.partition(b"\r\n\r\n")
            assert head_part.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")) and b"application/json" in head_part.lower(), raw[:300]
            assert json.loads(body)["error"]["type"] == "invalid_request_error"
