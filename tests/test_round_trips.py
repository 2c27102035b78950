"""The calls a request makes upstream: which, in which order, none wasted."""

from __future__ import annotations

import pytest

from relay.pool.account import State
from tests.conftest import HI, Relay, RelayFactory, eventually, session_key
from tests.test_inputs import data_url, tiny_png


def _sequence(fake, key: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.name for c in fake.calls if c.session_key == key]


async def _warm(relay: Relay) -> None:
    await eventually(lambda: all(a.org_id for a in relay.pool.accounts))


async def test_org_discovery_happens_at_start_up(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay()
    await _warm(relay)
    assert sorted(c.session_key for c in fake.calls_named("orgs")) == [session_key(n) for n in (1, 2, 3)]
    assert not fake.calls_named("completion")


async def test_plain_and_thinking_requests_take_one_call_before_the_first_token(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(sessions=session_key(1), conversations="fresh")
    await _warm(relay)
    client = relay.openai()
    await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    await client.chat.completions.create(model="claude-sonnet-4-6-think", messages=HI)
    await eventually(lambda: len(fake.deleted) == 2)
    assert _sequence(fake, session_key(1)) == ["orgs", "completion", "delete", "completion", "delete"]
    params = [c.body["create_conversation_params"] for c in fake.calls_named("completion")]
    assert [p.get("paprika_mode") for p in params] == [None, "extended"]
    assert not fake.conversations  # nothing leaked


@pytest.mark.parametrize("refusal", [404, 400])
async def test_upstream_without_inline_creation_falls_back_once_per_account(make_relay: RelayFactory, fake, refusal: int) -> None:
    fake.inline_create = False
    fake.inline_refusal = refusal
    relay = await make_relay(sessions=session_key(1), conversations="fresh")
    await _warm(relay)
    client = relay.openai()
    first = await client.chat.completions.create(model="claude-sonnet-4-6-think", messages=HI)
    second = await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    assert first.choices[0].message.content and second.choices[0].message.content
    await eventually(lambda: len(fake.deleted) == 2)
    assert _sequence(fake, session_key(1)) == [
        "orgs",
        "completion",  # refused: unknown chat, inline creation not supported
        "create",
        "settings",
        "completion",
        "delete",
        "create",
        "completion",
        "delete",
    ]
    assert fake.calls_named("settings")[0].body == {"settings": {"paprika_mode": "extended"}}
    assert relay.pool.accounts[0].state is State.ACTIVE and relay.pool.accounts[0].failures == 0
    assert not fake.conversations


async def test_uploads_run_concurrently(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(sessions=session_key(1), conversations="fresh")
    await _warm(relay)
    fake.latency = 0.2
    parts = [{"type": "image_url", "image_url": {"url": data_url("image/png", tiny_png())}} for _ in range(4)]
    await relay.openai().chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": parts}])
    assert len(fake.calls_named("upload")) == 4
    assert fake.max_parallel_uploads == 4
