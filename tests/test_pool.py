"""The account pool: failover before the first byte, learned states, honest errors, clean streams."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import openai
import pytest

from relay.config import parse_sessions
from relay.pool.account import State
from relay.pool.kept_answers import KeptAnswers
from tests.conftest import AUTH, HI, MODEL, Clock, Relay, RelayFactory, eventually, session_key


def states(relay: Relay) -> list[str]:
    return [a.state.value for a in relay.pool.accounts]


async def ask(relay: Relay) -> str:
    done = await relay.openai().chat.completions.create(model=MODEL, messages=HI)
    return done.choices[0].message.content or ""


@pytest.mark.parametrize(
    ("mode", "state", "reason"),
    [
        ("rate_limited", "cooling", "usage limit"),
        ("invalid", "invalid", "invalid"),
        ("banned", "disabled", "disabled"),
        ("region", "blocked", "region"),
        ("cloudflare_302", "blocked", "Cloudflare"),
        ("cloudflare_html", "blocked", "Cloudflare"),
    ],
)
async def test_failing_account_is_skipped_and_learned(make_relay: RelayFactory, fake, mode: str, state: str, reason: str) -> None:
    fake.script(session_key(1), mode)
    fake.script(session_key(2), text="from two")
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    await eventually(lambda: all(a.org_id or a.state is not State.ACTIVE for a in relay.pool.accounts))
    for _ in range(3):
        assert await ask(relay) == "from two"
    first = relay.pool.accounts[0]
    assert first.state.value == state
    assert reason.lower() in first.reason.lower()
    # once learned, the bad account is not asked again
    assert len([c for c in fake.calls_named("completion") if c.session_key == session_key(1)]) <= 1


@pytest.mark.parametrize("mode", ["overloaded", "server_error"])
async def test_transient_failure_retries_without_retiring(make_relay: RelayFactory, fake, mode: str) -> None:
    fake.script(session_key(1), mode)
    fake.script(session_key(2), text="fine")
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    answers = [await ask(relay) for _ in range(2)]
    assert answers == ["fine", "fine"]
    assert states(relay) == ["active", "active"]
    assert relay.pool.accounts[0].failures >= 1
    assert "overloaded" not in "".join(answers).lower()


async def test_rate_limit_cooldown_ends_by_itself(make_relay: RelayFactory, fake) -> None:
    clock = Clock()
    behavior = fake.script(session_key(1), "rate_limited", resets_at=clock.now + 120)
    relay = await make_relay(sessions=session_key(1), clock=clock)
    with pytest.raises(openai.RateLimitError) as info:
        await ask(relay)
    assert 120 <= int(info.value.response.headers["Retry-After"]) <= 121
    assert states(relay) == ["cooling"]
    behavior.mode = "ok"
    clock.now += 60
    with pytest.raises(openai.RateLimitError):
        await ask(relay)  # still cooling: nobody was asked
    assert len(fake.calls_named("completion")) == 1
    clock.now += 61  # resetsAt is whole seconds
    assert await ask(relay)
    assert states(relay) == ["active"]


async def test_all_cooling_gives_429_with_retry_after(make_relay: RelayFactory, fake) -> None:
    resets = time.time() + 600
    for n in (1, 2):
        fake.script(session_key(n), "rate_limited", resets_at=resets)
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(f"{relay.url}/v1/chat/completions", json={"model": MODEL, "messages": HI}, headers=AUTH) as r:
                body = await r.json()
                assert r.status == 429
                assert 590 <= int(r.headers["Retry-After"]) <= 601
    assert body["error"]["type"] == "rate_limit_error"
    assert "rate limited" in body["error"]["message"]
    assert states(relay) == ["cooling", "cooling"]
    assert len(fake.calls_named("completion")) == 2  # the second request asked nobody


async def test_dead_pool_503_says_why_per_state(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), "invalid")
    fake.script(session_key(2), "invalid")
    fake.script(session_key(3), "cloudflare_html")
    relay = await make_relay()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{relay.url}/v1/chat/completions", json={"model": MODEL, "messages": HI}, headers=AUTH) as r:
            body = await r.json()
            assert r.status == 503
    message = body["error"]["message"]
    assert "2 accounts invalid" in message and "1 account blocked by Cloudflare" in message
    assert "multiple attempts" not in message


async def test_invalid_cookie_found_at_start_up(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(2), "invalid")
    relay = await make_relay()
    await eventually(lambda: relay.pool.accounts[1].state is State.INVALID)
    assert [c.name for c in fake.calls if c.session_key == session_key(2)] == ["orgs"]


async def test_account_without_chat_org_is_disabled(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), "no_chat_org")
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    await eventually(lambda: relay.pool.accounts[0].state is State.DISABLED)


async def test_message_limit_after_answer_cools_the_account(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), "limit_after", text="last one", resets_at=time.time() + 900)
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    await eventually(lambda: all(a.org_id for a in relay.pool.accounts))
    assert await ask(relay) == "last one"
    assert states(relay) == ["cooling", "active"]
    assert relay.pool.accounts[0].failures == 0


async def test_mid_stream_drop_keeps_text_and_sends_one_error_frame(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), "drop", text="a b c d e f", drop_after=3)
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    body = {"model": MODEL, "messages": HI, "stream": True}
    async with aiohttp.ClientSession() as http, http.post(f"{relay.url}/v1/chat/completions", json=body, headers=AUTH) as r:
        raw = (await r.read()).decode()
    frames = [json.loads(f.removeprefix("data: ")) for f in raw.split("\n\n") if f.startswith("data: {")]
    text = "".join(f["choices"][0]["delta"].get("content", "") for f in frames if "choices" in f)
    assert text == "a b c "
    errors = [f for f in frames if "error" in f]
    assert len(errors) == 1 and "mid-answer" in errors[0]["error"]["message"]
    assert "[DONE]" not in raw
    assert [c.session_key for c in fake.calls_named("completion")] == [session_key(1)]  # never retried


async def test_mid_stream_drop_raises_in_the_openai_sdk(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), "drop", text="a b c d e f", drop_after=2)
    relay = await make_relay(sessions=session_key(1))
    stream = await relay.openai().chat.completions.create(model=MODEL, messages=HI, stream=True)
    got: list[str] = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "a b "


async def test_non_stream_drop_fails_over_to_next_account(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), "drop", text="a b c d", drop_after=2)
    fake.script(session_key(2), text="whole answer")
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    await eventually(lambda: all(a.org_id for a in relay.pool.accounts))
    assert await ask(relay) == "whole answer"


async def test_client_disconnect_closes_upstream_and_deletes_chat(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), text=" ".join(["word"] * 200), chunk_delay=0.05)
    relay = await make_relay(sessions=session_key(1))
    body = {"model": MODEL, "messages": HI, "stream": True}
    async with aiohttp.ClientSession() as http, http.post(f"{relay.url}/v1/chat/completions", json=body, headers=AUTH) as r:
        await r.content.readuntil(b"word")
    await eventually(lambda: fake.disconnects == 1 and fake.open_streams == 0, timeout=3)
    account = relay.pool.accounts[0]
    await eventually(lambda: account.in_flight_here == 0)
    conv = fake.calls_named("completion")[0].path.split("/")[-2]
    await eventually(lambda: conv in fake.deleted)


async def test_openai_sdk_closing_early_closes_upstream(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), text=" ".join(["w"] * 300), chunk_delay=0.05)
    relay = await make_relay(sessions=session_key(1))
    stream = await relay.openai().chat.completions.create(model=MODEL, messages=HI, stream=True)
    async for chunk in stream:
        if chunk.choices[0].delta.content:
            break
    await stream.close()
    await eventually(lambda: fake.disconnects == 1, timeout=3)


async def test_long_silence_gets_heartbeats(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), text="late", first_delay=0.6)
    relay = await make_relay(sessions=session_key(1), heartbeat_interval=0.2)
    # thinking first so the stream starts, then the text arrives after a silence
    fake.behaviors[session_key(1)].thinking = "t"
    body = {"model": MODEL + "-think", "messages": HI, "stream": True}
    async with aiohttp.ClientSession() as http, http.post(f"{relay.url}/v1/chat/completions", json=body, headers=AUTH) as r:
        raw = (await r.read()).decode()
    assert ": ping" in raw
    assert raw.endswith("data: [DONE]\n\n")


async def test_concurrent_requests_spread_over_accounts(make_relay: RelayFactory, fake) -> None:
    for n in (1, 2, 3):
        fake.script(session_key(n), text="x y z", chunk_delay=0.05)
    relay = await make_relay()
    await eventually(lambda: all(a.org_id for a in relay.pool.accounts))
    await asyncio.gather(*(ask(relay) for _ in range(6)))
    used = [c.session_key for c in fake.calls_named("completion")]
    assert sorted(used.count(session_key(n)) for n in (1, 2, 3)) == [2, 2, 2]
    assert all(a.in_flight_here == 0 for a in relay.pool.accounts)


async def test_max_retries_bounds_attempts(make_relay: RelayFactory, fake) -> None:
    for n in (1, 2, 3):
        fake.script(session_key(n), "server_error")
    relay = await make_relay(max_retries=2)
    with pytest.raises(openai.APIStatusError) as info:
        await ask(relay)
    assert info.value.status_code == 502
    assert len(fake.calls_named("completion")) == 2
    assert "acct-" in info.value.message


async def test_accounts_view_is_masked(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(2), "invalid")
    relay = await make_relay()
    await eventually(lambda: relay.pool.accounts[1].state is State.INVALID)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{relay.url}/v1/accounts", headers=AUTH) as r:
            text = await r.text()
        async with http.get(f"{relay.url}/v1/accounts") as unauthorized:
            assert unauthorized.status == 401
    data = json.loads(text)["data"]
    assert [a["state"] for a in data] == ["active", "invalid", "active"]
    assert data[1]["key"] == "sk-ant-sid01-...02AA" and data[1]["reason"]
    for n in (1, 2, 3):
        assert session_key(n) not in text


async def test_reload_keeps_state_of_kept_accounts(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), "rate_limited", resets_at=time.time() + 600)
    current = parse_sessions(f"{session_key(1)},{session_key(2)}")
    relay = await make_relay(sessions=current, reload=lambda: current)
    await ask(relay)
    current = parse_sessions(f"{session_key(1)},{session_key(5)},{session_key(6)}")
    async with aiohttp.ClientSession() as http, http.post(f"{relay.url}/v1/accounts/reload", headers=AUTH) as r:
        assert r.status == 200
        assert await r.json() == {"accounts": 3, "added": 2, "removed": 1}
    assert states(relay) == ["cooling", "active", "active"]
    assert [a.key for a in relay.pool.accounts] == [session_key(n) for n in (1, 5, 6)]


async def test_slow_failures_after_early_headers_end_in_band(make_relay: RelayFactory, fake) -> None:
    for n in (1, 2):
        fake.script(session_key(n), "overloaded", first_delay=0.3)
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}", heartbeat_interval=0.1)
    body = {"model": MODEL, "messages": HI, "stream": True}
    async with aiohttp.ClientSession() as http, http.post(f"{relay.url}/v1/chat/completions", json=body, headers=AUTH) as r:
        assert r.status == 200  # headers went out while accounts were still being tried
        raw = (await r.read()).decode()
    frames = [json.loads(f.removeprefix("data: ")) for f in raw.split("\n\n") if f.startswith("data: ")]
    assert len(frames) == 1 and "Overloaded" in frames[0]["error"]["message"]
    assert len(fake.calls_named("completion")) == 2


async def test_shutdown_cuts_live_streams_with_one_error_frame(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), text=" ".join(["w"] * 400), chunk_delay=0.02)
    relay = await make_relay(sessions=session_key(1), shutdown_grace=0.2)
    body = {"model": MODEL, "messages": HI, "stream": True}
    async with aiohttp.ClientSession() as http, http.post(f"{relay.url}/v1/chat/completions", json=body, headers=AUTH) as r:
        await r.content.readuntil(b"w ")
        closing = asyncio.create_task(relay.server.close())
        raw = (await r.content.read()).decode()
    await closing
    assert raw.count('"error"') == 1 and "shutting down" in raw
    assert "[DONE]" not in raw
    await eventually(lambda: fake.open_streams == 0)
    assert not fake.conversations  # the cut chat was still deleted before the relay stopped


@pytest.mark.parametrize(
    ("mode", "state", "reason"),
    [
        ("cloudflare_html", State.BLOCKED, "Cloudflare"),
        ("cloudflare_302", State.BLOCKED, "Cloudflare"),
        ("region", State.BLOCKED, "region"),
        ("orgs_error_object", State.INVALID, "invalid"),
        ("server_error", State.ACTIVE, ""),
    ],
)
async def test_organization_lookup_failures_are_classified_not_crashes(
    make_relay: RelayFactory, fake, mode: str, state: State, reason: str
) -> None:
    fake.script(session_key(1), mode, fail_calls=frozenset({"orgs"}))
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    await eventually(lambda: bool(fake.calls_named("orgs")) and relay.pool.accounts[1].org_id is not None)
    await eventually(
        lambda: relay.pool.accounts[0].state is state and (state is not State.ACTIVE or relay.pool.accounts[0].failures > 0)
    )
    assert reason.lower() in relay.pool.accounts[0].reason.lower()
    assert await ask(relay)  # the other account serves


async def test_an_account_refused_longer_than_the_ttl_is_dead(make_relay: RelayFactory, fake) -> None:
    clock = Clock()
    behavior = fake.script(session_key(1), "invalid")
    fake.script(session_key(2), text="from two")
    current = parse_sessions(f"{session_key(1)},{session_key(2)}")
    relay = await make_relay(sessions=current, reload=lambda: current, clock=clock, dead_account_ttl=3600)
    await eventually(lambda: relay.pool.accounts[0].state is State.INVALID)
    refused_at = relay.pool.accounts[0].refused_since
    assert refused_at is not None
    async with aiohttp.ClientSession() as http:
        # A reload within the TTL gives it another chance; refused again, it keeps its first date.
        async with http.post(f"{relay.url}/v1/accounts/reload", headers=AUTH) as r:
            assert r.status == 200
        clock.now += 1800
        assert await ask(relay) == "from two"
        await eventually(lambda: relay.pool.accounts[0].state is State.INVALID)
        assert relay.pool.accounts[0].refused_since == refused_at
        clock.now += 1801
        async with http.get(f"{relay.url}/v1/accounts", headers=AUTH) as r:
            listed = (await r.json())["data"]
        assert [a["state"] for a in listed] == ["dead", "active"]
        assert listed[0]["refused_since"] == refused_at
        # Reloads no longer retry it: claude.ai is not asked about it again.
        asked = len([c for c in fake.calls if c.session_key == session_key(1)])
        async with http.post(f"{relay.url}/v1/accounts/reload", headers=AUTH) as r:
            assert r.status == 200
        for _ in range(3):
            assert await ask(relay) == "from two"
        assert states(relay) == ["dead", "active"]
        assert len([c for c in fake.calls if c.session_key == session_key(1)]) == asked
        # An operator's check that claude.ai answers brings it back.
        behavior.mode = "ok"
        admin = {"Authorization": AUTH["Authorization"]}
        async with http.post(f"{relay.url}/v1/admin/accounts/acct-1/check", headers=admin) as r:
            assert r.status == 200 and (await r.json())["state"] == "active"
    assert relay.pool.accounts[0].refused_since is None


async def test_only_dead_accounts_left_say_so(make_relay: RelayFactory, fake) -> None:
    clock = Clock()
    fake.script(session_key(1), "banned")
    relay = await make_relay(sessions=session_key(1), dead_account_ttl=60, clock=clock)
    body = {"model": MODEL, "messages": HI}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{relay.url}/v1/chat/completions", json=body, headers=AUTH) as r:
            assert r.status in (401, 403, 503)
        assert states(relay) == ["disabled"]
        clock.now += 61
        async with http.post(f"{relay.url}/v1/chat/completions", json=body, headers=AUTH) as r:
            assert r.status == 503
            assert "1 account dead (refused for longer than DEAD_ACCOUNT_TTL" in (await r.json())["error"]["message"]


def test_kept_answers_are_bounded_in_bytes_as_well_as_in_count() -> None:
    clock = Clock()
    kept = KeptAnswers(60, clock, max_count=3, max_bytes=100)
    for n in range(3):
        kept.keep(f"a{n}", "x" * 30)
    assert kept.load("a0") == "x" * 30  # now the most recently used
    kept.keep("big", "y" * 50)  # four answers, 140 bytes: the least recently used go until both fit
    assert [kept.load(k) is not None for k in ("a0", "a1", "a2", "big")] == [True, False, False, True]
    kept.keep("big", "y" * 20)  # a new text for the same id replaces the old one's bytes
    kept.keep("c", "w" * 50)  # 100 bytes in three answers: nothing goes
    assert [kept.load(k) is not None for k in ("a0", "big", "c")] == [True, True, True]
    clock.now += 61
    assert kept.load("big") is None and kept.snapshot(clock.now) == {}
