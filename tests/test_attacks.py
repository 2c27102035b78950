"""What an outside attack on relay found, each held by a test that failed before its fix: keys,
leaks, replicas, secrets at rest."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.conftest import HI, MODEL, RelayFactory, eventually, session_key


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
