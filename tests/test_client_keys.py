"""Named client keys: made by the admin API, limited, counted by name, stored hashed."""

from __future__ import annotations

import json

import aiohttp
import anthropic
import openai
import pytest

from tests.conftest import AUTH, HI, MODEL, RelayFactory, admin_call, session_key


async def test_a_key_over_its_limit_gets_429_while_another_is_served(make_relay: RelayFactory, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "state.json"
    relay = await make_relay(admin_key="admin-key-0123456789", state_file=str(state))
    status, alice = await admin_call(relay, "POST", "/v1/admin/keys", {"name": "alice", "rpm": 2})
    assert status == 201 and alice["key"].startswith("rk-") and alice["limits"]["rpm"] == 2
    status, bob = await admin_call(relay, "POST", "/v1/admin/keys", {"name": "bob", "models": [MODEL]})
    assert status == 201
    assert (await admin_call(relay, "POST", "/v1/admin/keys", {"name": "bob"}))[0] == 409
    as_alice = relay.openai(api_key=alice["key"])
    for _ in range(2):
        await as_alice.chat.completions.create(model=MODEL, messages=HI)
    with pytest.raises(openai.RateLimitError) as info:
        await as_alice.chat.completions.create(model=MODEL, messages=HI)
    assert info.value.code == "key_rate_limited" and 1 <= int(info.value.response.headers["Retry-After"]) <= 61
    claude = anthropic.AsyncAnthropic(base_url=relay.url, api_key=alice["key"], max_retries=0)
    with pytest.raises(anthropic.RateLimitError):  # in Anthropic's shape on Anthropic's route
        await claude.messages.create(model=MODEL, max_tokens=10, messages=HI)
    await claude.close()
    as_bob = relay.openai(api_key=bob["key"])
    assert (await as_bob.chat.completions.create(model=MODEL, messages=HI)).choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await as_bob.chat.completions.create(model="claude-opus-4-6", messages=HI)
    assert denied.value.code == "model_not_allowed"
    # Counted by name, never shown by key; stored only as a hash; no way into the admin routes.
    status, listed = await admin_call(relay, "GET", "/v1/admin/keys")
    usage = {k["name"]: k["usage"] for k in listed["data"]}
    assert usage["alice"]["requests"] == 2 and usage["bob"]["requests"] == 1 and usage["alice"]["tokens_in"] > 0
    async with aiohttp.ClientSession() as http:
        async with http.get(relay.url + "/metrics", headers=AUTH) as r:
            metrics = await r.text()
        async with http.get(relay.url + "/stats", headers=AUTH) as r:
            stats = await r.text()
    assert 'relay_client_requests_total{key="alice"} 2.0' in metrics
    saved = state.read_text()
    for text in (metrics, stats, json.dumps(listed), saved):
        assert alice["key"] not in text and bob["key"] not in text
    assert (await admin_call(relay, "GET", "/v1/admin/keys", headers={"Authorization": f"Bearer {alice['key']}"}))[0] == 401
    assert (await admin_call(relay, "DELETE", "/v1/admin/keys/bob"))[0] == 200
    with pytest.raises(openai.AuthenticationError):
        await as_bob.chat.completions.create(model=MODEL, messages=HI)


async def test_concurrency_limit_and_keys_from_a_file(make_relay: RelayFactory, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([{"name": "carol", "key": "carol-secret-key-123", "concurrency": 1}]))
    relay = await make_relay(client_keys=str(keys))
    for n in (1, 2, 3):
        fake.script(session_key(n), text=" ".join(["w"] * 20), chunk_delay=0.02)
    client = relay.openai(api_key="carol-secret-key-123")
    stream = await client.chat.completions.create(model=MODEL, messages=HI, stream=True)
    async for _ in stream:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model=MODEL, messages=HI)
        assert info.value.code == "key_concurrency"
        break
    await stream.close()
