"""Account state shared by replicas through a real Redis, and kept across restarts in STATE_FILE."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.pool.account import State
from relay.server.keys import settings_key
from tests.conftest import (
    AUTH,
    HI,
    MODEL,
    Clock,
    RedisServer,
    Relay,
    RelayFactory,
    eventually,
    needs_redis,
    relay_process,
    session_key,
    wait_healthy,
)


@pytest.fixture
def replicas(make_relay: RelayFactory, shared_redis: str):  # type: ignore[no-untyped-def]
    """Build relays that share one Redis (and a prefix of their own, so tests do not meet)."""
    prefix = f"t{uuid.uuid4().hex[:8]}"

    async def build(**kw: Any) -> Relay:
        return await make_relay(state_url=shared_redis, state_prefix=prefix, **kw)

    return build


async def _ask(relay: Relay) -> str:
    done = await relay.openai().chat.completions.create(model=MODEL, messages=HI)
    return done.choices[0].message.content or ""


async def _accounts(relay: Relay) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{relay.url}/v1/accounts", headers=AUTH) as r:
        return list((await r.json())["data"])


def _calls_to(fake: Any, n: int) -> int:
    return len([c for c in fake.calls_named("completion") if c.session_key == session_key(n)])


@needs_redis
@pytest.mark.parametrize(("mode", "state"), [("rate_limited", "cooling"), ("invalid", "invalid")])
async def test_what_one_replica_learns_the_other_knows(replicas, fake, mode: str, state: str) -> None:  # type: ignore[no-untyped-def]
    sessions = f"{session_key(1)},{session_key(2)}"
    a, b = await replicas(sessions=sessions), await replicas(sessions=sessions)
    await eventually(lambda: all(x.org_id for x in a.pool.accounts) and all(x.org_id for x in b.pool.accounts))
    fake.script(session_key(1), mode, resets_at=time.time() + 600) if mode == "rate_limited" else fake.script(
        session_key(1), mode
    )
    fake.script(session_key(2), text="from two")
    while a.pool.accounts[0].state is State.ACTIVE:
        assert await _ask(a) == "from two"
    before = _calls_to(fake, 1)
    for _ in range(4):
        assert await _ask(b) == "from two"
    assert _calls_to(fake, 1) == before  # b never asked the account a found bad
    shared = await _accounts(b)
    assert [x["state"] for x in shared] == [state, "active"]
    assert shared[0]["failures"] >= 1


@needs_redis
async def test_an_account_refused_too_long_is_dead_on_every_replica(replicas, fake) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    sessions = f"{session_key(1)},{session_key(2)}"
    a = await replicas(sessions=sessions, clock=clock, dead_account_ttl=3600)
    b = await replicas(sessions=sessions, clock=clock, dead_account_ttl=3600)
    await eventually(lambda: all(x.org_id for x in a.pool.accounts) and all(x.org_id for x in b.pool.accounts))
    fake.script(session_key(1), "invalid")
    fake.script(session_key(2), text="from two")
    while a.pool.accounts[0].state is State.ACTIVE:
        assert await _ask(a) == "from two"
    refused = a.pool.accounts[0].refused_since
    await b.pool.refresh()
    assert b.pool.accounts[0].refused_since == refused  # the first refusal's time travels with the state
    clock.now += 3601
    assert [x["state"] for x in await _accounts(b)] == ["dead", "active"]
    assert [x["state"] for x in await _accounts(a)] == ["dead", "active"]


@needs_redis
async def test_selection_is_shared_across_replicas(replicas, fake) -> None:  # type: ignore[no-untyped-def]
    sessions = ",".join(session_key(n) for n in range(1, 5))
    for n in range(1, 5):
        fake.script(session_key(n), text="slow answer here", chunk_delay=0.1)
    a, b = await replicas(sessions=sessions), await replicas(sessions=sessions)
    await eventually(lambda: all(x.org_id for x in a.pool.accounts + b.pool.accounts))
    await asyncio.gather(_ask(a), _ask(b), _ask(a), _ask(b))
    assert sorted(_calls_to(fake, n) for n in range(1, 5)) == [1, 1, 1, 1]  # in-flight counts are shared


@needs_redis
async def test_in_flight_returns_to_zero_after_streams_and_disconnects(replicas, fake) -> None:  # type: ignore[no-untyped-def]
    fake.script(session_key(1), text=" ".join(["w"] * 60), chunk_delay=0.03)
    a, b = await replicas(sessions=session_key(1)), await replicas(sessions=session_key(1))
    body = {"model": MODEL, "messages": HI, "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{a.url}/v1/chat/completions", json=body, headers=AUTH) as r:
            await r.content.readuntil(b"w ")
            assert (await _accounts(b))[0]["in_flight"] == 1
            await r.read()
        assert (await _accounts(b))[0]["in_flight"] == 0
        async with http.post(f"{a.url}/v1/chat/completions", json=body, headers=AUTH) as r:
            await r.content.readuntil(b"w ")
    await eventually(lambda: fake.disconnects >= 1)
    async with asyncio.timeout(5):
        while (await _accounts(b))[0]["in_flight"] != 0:
            await asyncio.sleep(0.05)


@needs_redis
async def test_a_killed_replica_frees_its_leases(replicas, fake, shared_redis: str) -> None:  # type: ignore[no-untyped-def]
    fake.script(session_key(1), text=" ".join(["w"] * 400), chunk_delay=0.05)
    b = await replicas(sessions=session_key(1), state_lease_seconds=1.0)
    prefix = b.app[settings_key].state_prefix
    proc, port = relay_process(fake, STATE_URL=shared_redis, STATE_PREFIX=prefix, STATE_LEASE_SECONDS="1")
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, port)
            body = {"model": MODEL, "messages": HI, "stream": True}
            async with http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=AUTH) as r:
                await r.content.readuntil(b"w ")
                assert (await _accounts(b))[0]["in_flight"] == 1
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    async with asyncio.timeout(5):  # the lease ran out; nobody renewed it
        while (await _accounts(b))[0]["in_flight"] != 0:
            await asyncio.sleep(0.1)


async def test_state_file_keeps_a_cooldown_across_restarts(make_relay: RelayFactory, fake, tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    sessions = f"{session_key(1)},{session_key(2)}"
    fake.script(session_key(1), "rate_limited", resets_at=time.time() + 3600)
    first = await make_relay(sessions=sessions, state_file=str(path))
    await eventually(lambda: all(a.org_id for a in first.pool.accounts))
    while first.pool.accounts[0].state is State.ACTIVE:
        await _ask(first)
    assert path.is_file()
    orgs_before = len(fake.calls_named("orgs"))
    second = await make_relay(sessions=sessions, state_file=str(path))
    assert second.pool.accounts[0].state is State.COOLING
    before = _calls_to(fake, 1)
    for _ in range(3):
        await _ask(second)
    assert _calls_to(fake, 1) == before
    assert len(fake.calls_named("orgs")) == orgs_before  # organization ids were kept too


@needs_redis
async def test_redis_going_away_degrades_but_keeps_serving(make_relay: RelayFactory, fake, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        relay = await make_relay(state_url=server.url, state_lease_seconds=0.6)
        assert await _ask(relay)
        server.stop()
        for _ in range(3):
            assert await _ask(relay)
        async with aiohttp.ClientSession() as http, http.get(f"{relay.url}/health") as r:
            health = await r.json()
        assert health["status"] == "degraded" and "redis" in health["state_store"]
        server.start()
        async with aiohttp.ClientSession() as http, asyncio.timeout(10):
            while True:
                async with http.get(f"{relay.url}/health") as r:
                    if (await r.json())["state_store"] == "ok":
                        break
                await asyncio.sleep(0.1)
        assert await _ask(relay)
    finally:
        server.stop()
