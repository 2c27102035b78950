"""What an outside attack on relay found, each held by a test that failed before its fix: keys,
leaks, replicas, secrets at rest."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import tracemalloc
import uuid
import zlib

import aiohttp
import openai
import pytest
from redis.asyncio import Redis

from tests.conftest import (
    ADMIN_KEY,
    AUTH,
    HI,
    MODEL,
    STATE_SECRET,
    LoopbackProxy,
    RedisServer,
    Relay,
    RelayFactory,
    admin_call,
    eventually,
    needs_redis,
    relay_process,
    session_key,
    wait_healthy,
)

CHAT = "/v1/chat/completions"


async def test_an_upstream_that_hangs_before_its_headers_keeps_no_connection(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), "hang")
    relay = await make_relay(
        sessions=session_key(1), read_timeout=1, connect_timeout=1, upstream_max_connections=2, max_retries=1
    )
    await eventually(lambda: relay.pool.accounts[0].org_id is not None)
    client = relay.openai()

    async def ask() -> None:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model=MODEL, messages=HI)
        assert info.value.status_code == 504

    await asyncio.gather(*(ask() for _ in range(4)))
    # Every hanging upstream request is given up by curl too, not only by relay's own timer.
    await eventually(lambda: fake.hanging == 0, timeout=10)
    relay.pool.accounts[0].backoff_until = None  # the account's back-off is not what this tests
    fake.script(session_key(1))  # claude.ai recovered: the account's two connection slots are free
    done = await client.chat.completions.create(model=MODEL, messages=HI)
    assert done.choices[0].message.content


async def test_a_compressed_body_is_inflated_only_up_to_the_body_limit(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(max_body_size=1024 * 1024)
    inflated = b'{"model": "%s", "messages": [{"role": "user", "content": "' % MODEL.encode() + b" " * (64 << 20) + b'"}]}'
    bomb = gzip.compress(inflated, 9)  # about 64 KB on the wire
    headers = {**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    tracemalloc.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(relay.url + CHAT, data=bomb, headers=headers) as r,
        ):
            status, body = r.status, await r.json()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Refusing it costs about the limit, not the 64 MB it would inflate to.
    assert peak < 5 << 20, peak  # about 2.4 MB here; aiohttp inflating ahead of the reader took 9.7 MB
    assert status == 413 and "inflated" in body["error"]["message"]
    small = {"model": MODEL, "messages": HI}
    for encoding, data in (
        ("gzip", gzip.compress(json.dumps(small).encode())),
        ("deflate", zlib.compress(json.dumps(small).encode())),
    ):
        async with aiohttp.ClientSession() as http:
            post = http.post(relay.url + CHAT, data=data, headers={**headers, "Content-Encoding": encoding})
            async with post as r:
                assert r.status == 200, await r.text()
    async with aiohttp.ClientSession() as http:
        post = http.post(relay.url + CHAT, data=bomb, headers={**headers, "Content-Encoding": "br"})
        async with post as r:
            assert r.status == 400 and "not supported" in (await r.json())["error"]["message"]


async def test_one_wrong_key_revokes_no_key_of_the_keys_file(make_relay: RelayFactory, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([{"name": "carol", "key": "carol-secret-key-123"}]))
    relay = await make_relay(client_keys=str(keys))
    carol = relay.openai(api_key="carol-secret-key-123")
    assert (await carol.chat.completions.create(model=MODEL, messages=HI)).choices
    with pytest.raises(openai.AuthenticationError):
        await relay.openai(api_key="made-up-key").chat.completions.create(model=MODEL, messages=HI)
    assert (await carol.chat.completions.create(model=MODEL, messages=HI)).choices


async def test_a_named_key_cannot_use_the_operators_routes(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(admin_key=ADMIN_KEY)
    status, made = await admin_call(relay, "POST", "/v1/admin/keys", {"name": "dave"})
    assert status == 201
    dave = {"Authorization": f"Bearer {made['key']}"}
    for method, path in (("GET", "/v1/accounts"), ("POST", "/v1/accounts/reload"), ("GET", "/hf/v1/accounts")):
        status, body = await admin_call(relay, method, path, headers=dave)
        assert status == 403 and body["error"]["code"] == "operator_only", (path, body)
    assert (await admin_call(relay, "GET", "/v1/accounts", headers=AUTH))[0] == 200
    assert (await admin_call(relay, "GET", "/v1/accounts"))[0] == 200  # ADMIN_KEY
    assert (await admin_call(relay, "GET", "/v1/accounts", headers={"Authorization": "Bearer nope"}))[0] == 401
    assert (await relay.openai(api_key=made["key"]).chat.completions.create(model=MODEL, messages=HI)).choices


async def test_the_status_page_cannot_be_framed_or_sniffed(relay: Relay) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/health", "/v1/models"):
            async with http.get(relay.url + path, headers=AUTH) as r:
                assert r.headers["X-Frame-Options"] == "DENY", path
                assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
                assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_errors_quote_client_input_cut_short(relay: Relay) -> None:
    huge = "x" * 10_000
    bodies = (
        {"model": MODEL, "messages": [{"role": "user", "content": [{"type": huge, "text": "hi"}]}]},
        {"model": huge, "messages": HI},
        {"model": MODEL, "messages": [{"role": huge, "content": "hi"}]},
    )
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            async with http.post(relay.url + CHAT, json=body, headers=AUTH) as r:
                answer = await r.json()
            assert r.status in (400, 404) and len(answer["error"]["message"]) <= 600, answer["error"]["message"][:200]
            assert "x" * 100 not in answer["error"]["message"]


@needs_redis
async def test_named_key_limits_hold_over_two_replicas(make_relay: RelayFactory, fake, shared_redis: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    one = await make_relay(state_url=shared_redis, state_prefix=prefix, admin_key=ADMIN_KEY)
    two = await make_relay(state_url=shared_redis, state_prefix=prefix, admin_key=ADMIN_KEY)
    status, erin = await admin_call(one, "POST", "/v1/admin/keys", {"name": "erin", "rpm": 3})
    assert status == 201
    served = []
    for replica in (one, two, one, two, one, two):
        try:
            await replica.openai(api_key=erin["key"]).chat.completions.create(model=MODEL, messages=HI)
            served.append(True)
        except openai.RateLimitError as exc:
            assert exc.code == "key_rate_limited" and int(exc.response.headers["Retry-After"]) >= 1
            served.append(False)
    assert served == [True, True, True, False, False, False]
    status, fred = await admin_call(two, "POST", "/v1/admin/keys", {"name": "fred", "concurrency": 1})
    for n in (1, 2, 3):
        fake.script(session_key(n), text=" ".join(["w"] * 30), chunk_delay=0.02)
    stream = await one.openai(api_key=fred["key"]).chat.completions.create(model=MODEL, messages=HI, stream=True)
    async for _ in stream:
        with pytest.raises(openai.RateLimitError) as info:
            await two.openai(api_key=fred["key"]).chat.completions.create(model=MODEL, messages=HI)
        assert info.value.code == "key_concurrency"
        break
    await stream.close()
    await eventually(lambda: one.pool.accounts and all(a.in_flight_here == 0 for a in one.pool.accounts))
    assert (await two.openai(api_key=fred["key"]).chat.completions.create(model=MODEL, messages=HI)).choices


@needs_redis
async def test_what_one_replica_learns_of_an_account_the_other_knows(make_relay: RelayFactory, fake, shared_redis: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    fake.script(session_key(1), "server_error")
    fake.script(session_key(2), models=frozenset({"claude-other"}), refuse_fields=frozenset({"effort"}))
    one = await make_relay(sessions=f"{session_key(1)},{session_key(2)}", state_url=shared_redis, state_prefix=prefix)
    two = await make_relay(sessions=f"{session_key(1)},{session_key(2)}", state_url=shared_redis, state_prefix=prefix)
    await one.openai().chat.completions.create(model="claude-other", messages=HI, reasoning_effort="low")
    with pytest.raises(openai.APIStatusError):
        await one.openai().chat.completions.create(model=MODEL, messages=HI)
    await two.pool.refresh()
    first, second = two.pool.accounts
    assert first.backoff_until is not None and first.streak >= 1  # the back-off one learned
    assert MODEL in second.models_unavailable and second.features.get("effort") is False
    before = len(fake.calls_named("completion"))
    await two.openai().chat.completions.create(model="claude-other", messages=HI, reasoning_effort="low")
    asked = fake.calls_named("completion")[before:]
    assert [c.session_key for c in asked] == [session_key(2)] and "effort" not in asked[0].body


@needs_redis
async def test_a_redis_outage_forgets_nothing_an_operator_added(make_relay: RelayFactory, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path)
    server.start()
    try:
        shared = {"state_url": server.url, "state_secret": STATE_SECRET, "admin_key": ADMIN_KEY}
        one = await make_relay(sessions=session_key(1), **shared)
        two = await make_relay(sessions=session_key(1), **shared)
        assert (await admin_call(one, "POST", "/v1/admin/accounts", {"session_key": session_key(2)}))[0] == 201
        status, gina = await admin_call(one, "POST", "/v1/admin/keys", {"name": "gina"})
        assert status == 201
        await two.pool.refresh()
        assert len(two.pool) == 2
        assert (await two.openai(api_key=gina["key"]).chat.completions.create(model=MODEL, messages=HI)).choices
        server.stop()  # Redis goes away ...
        status, listed = await admin_call(two, "GET", "/v1/accounts")
        assert status == 200 and len(listed["data"]) == 2  # ... and the other replica forgets nothing
        assert (await two.openai(api_key=gina["key"]).chat.completions.create(model=MODEL, messages=HI)).choices
        server.start()  # back, but empty (no persistence)
        await eventually(lambda: two.pool.store.degraded is None, timeout=15)
        await two.pool.refresh()
        probe = Redis.from_url(server.url, decode_responses=True)
        try:
            added = await probe.get("relay:added")
            keys = await probe.get("relay:keys")
        finally:
            await probe.aclose()
        assert added and session_key(2) not in added  # written back, sealed
        assert keys and "gina" in keys
        three = await make_relay(sessions=session_key(1), **shared)
        assert len(three.pool) == 2
        assert (await three.openai(api_key=gina["key"]).chat.completions.create(model=MODEL, messages=HI)).choices
    finally:
        server.stop()


async def test_secrets_at_rest_are_sealed_or_refused(proxy: LoopbackProxy, make_relay: RelayFactory, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "state.json"
    bare = await make_relay(sessions=session_key(1), admin_key=ADMIN_KEY, state_file=str(state))
    status, body = await admin_call(bare, "POST", "/v1/admin/accounts", {"session_key": session_key(2)})
    assert status == 409 and body["error"]["code"] == "state_secret_required"
    await bare.server.close()
    relay = await make_relay(sessions=session_key(1), admin_key=ADMIN_KEY, state_file=str(state), state_secret=STATE_SECRET)
    proxied = {"session_key": session_key(2), "proxy": proxy.url.replace("http://", "http://user:proxy-password@")}
    assert (await admin_call(relay, "POST", "/v1/admin/accounts", proxied))[0] == 201
    assert (await admin_call(relay, "POST", "/v1/admin/keys", {"name": "hal"}))[0] == 201
    secret_answer = await relay.openai().responses.create(model=MODEL, input="my secret diary entry")
    await relay.server.close()
    on_disk = state.read_text() + (tmp_path / "state.json.answers").read_text()
    for secret in (session_key(2), "proxy-password", "my secret diary entry", secret_answer.output_text):
        assert secret not in on_disk
    assert "hmac-sha256:" in on_disk  # the client key's hash is keyed
    again = await make_relay(sessions=session_key(1), admin_key=ADMIN_KEY, state_file=str(state), state_secret=STATE_SECRET)
    assert len(again.pool) == 2 and again.pool.accounts[1].proxy == proxied["proxy"]
    follow = await again.openai().responses.create(model=MODEL, input="and?", previous_response_id=secret_answer.id)
    asked = fake.calls_named("completion")[-1].body
    # The conversation survived the restart: its chat goes on, with only the new turn.
    assert follow.status == "completed" and asked["prompt"] == "Human: and?"
    assert asked["parent_message_uuid"] == fake.calls_named("completion")[-2].body["turn_message_uuids"]["assistant_message_uuid"]
    plain = await make_relay(
        sessions=session_key(1), admin_key=ADMIN_KEY, state_file=str(tmp_path / "p.json"), state_plaintext=True
    )
    assert (await admin_call(plain, "POST", "/v1/admin/accounts", {"session_key": session_key(3)}))[0] == 201


async def test_a_message_of_unclosed_think_tags_holds_up_nobody(fake) -> None:  # type: ignore[no-untyped-def]
    """Session digests drop `<think>` sections from every turn. A regex did it by rescanning the
    rest of the text from each unclosed tag: 140,000 of them would hold relay's event loop, and
    every other request with it, for about 10 minutes."""
    proc, port = relay_process(fake)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, port)
            hostile = {"model": MODEL, "messages": [{"role": "user", "content": "<think>" * 140_000}]}
            async with asyncio.timeout(60), http.post(f"http://127.0.0.1:{port}{CHAT}", json=hostile, headers=AUTH) as r:
                assert r.status == 200, await r.text()
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def test_a_schema_pattern_that_backtracks_without_end_holds_up_nobody(fake) -> None:  # type: ignore[no-untyped-def]
    """The client picks the pattern and can ask the model for the string: `^(a+)+$` against forty
    a's and a `!` would hold the event loop for hours. The check is stopped and counts as failed."""
    fake.script(session_key(1), text='{"s": "' + "a" * 40 + '!"}')
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}, "required": ["s"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    body = {"model": MODEL, "messages": HI, "response_format": fmt}
    proc, port = relay_process(fake)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, port)
            async with asyncio.timeout(60), http.post(f"http://127.0.0.1:{port}{CHAT}", json=body, headers=AUTH) as r:
                answer = await r.json()
            assert r.status == 502 and answer["error"]["code"] == "output_invalid", answer
            assert "took too long to check" in answer["error"]["message"] and len(fake.calls_named("completion")) == 2
            async with http.get(f"http://127.0.0.1:{port}/health") as r:
                assert r.status == 200
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def test_a_write_cut_by_kill_9_leaves_no_copy_behind(fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "state.json"
    for life in ("killed", "restarted"):
        proc, port = relay_process(fake, STATE_FILE=str(state), STATE_SECRET=STATE_SECRET)
        try:
            async with aiohttp.ClientSession() as http:
                await wait_healthy(http, port)
            if life == "killed":
                # What a write cut off by kill -9 leaves: a full copy beside the file, cookies included.
                (tmp_path / ".state.json.k1ll9x").write_text(json.dumps({"_added": [{"key": session_key(7)}]}))
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            else:
                assert not list(tmp_path.glob(".state.json.*")) and state.exists()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
