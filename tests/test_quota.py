"""Quota windows: read from every stream and from /usage, used to route by headroom, shown."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp

from relay.claude.webapi import parse_windows
from relay.pool.account import State
from tests.conftest import AUTH, HI, MODEL, Relay, RelayFactory, eventually, needs_redis, session_key
from tests.test_monitoring import CHROMIUM, _samples, _value

LOW, MID, HIGH = session_key(1), session_key(2), session_key(3)


async def _known(relay: Relay) -> None:
    """The background /usage round has read every account."""
    await eventually(lambda: all(a.usage for a in relay.pool.accounts), timeout=10)


def _served_by(fake: Any, since: int = 0) -> Counter[str]:
    return Counter(c.session_key for c in fake.calls_named("completion")[since:])


async def test_requests_go_where_the_quota_has_room(make_relay: RelayFactory, fake) -> None:
    for key, used in ((LOW, 0.10), (MID, 0.50), (HIGH, 0.95)):
        fake.script(key, usage={"5h": used, "7d": 0.2}, usage_step=0.001, text="one two three four", chunk_delay=0.02)
    relay = await make_relay()
    await _known(relay)
    assert [round(a.usage["5h"].utilization, 2) for a in relay.pool.accounts] == [0.10, 0.50, 0.95]  # type: ignore[index]
    client = relay.openai()
    for _ in range(5):
        await client.chat.completions.create(model=MODEL, messages=HI)
    assert _served_by(fake) == {LOW: 5}
    # Concurrent requests spread by headroom, counting what is in flight; never the nearly used one.
    before = len(fake.calls_named("completion"))
    await asyncio.gather(*(client.chat.completions.create(model=MODEL, messages=HI) for _ in range(24)))
    spread = _served_by(fake, before)
    assert spread[LOW] > spread[MID] > 0 and spread[HIGH] == 0, spread


async def test_a_used_up_window_cools_the_account_before_any_429(make_relay: RelayFactory, fake) -> None:
    fake.script(LOW, usage={"5h": 0.995}, usage_step=0.01)
    fake.script(MID, usage={"5h": 0.999}, usage_step=0.01)
    relay = await make_relay(sessions=f"{LOW},{MID}")
    await _known(relay)
    client = relay.openai()
    for n in range(2):  # each answer uses up its account's 5-hour window
        await client.chat.completions.create(model=MODEL, messages=HI)
        assert relay.pool.accounts[n].state is State.COOLING and relay.pool.accounts[n].until == fake.window_resets["5h"]
    assert _served_by(fake) == {LOW: 1, MID: 1}
    async with aiohttp.ClientSession() as http:
        async with http.post(relay.url + "/v1/chat/completions", json={"model": MODEL, "messages": HI}, headers=AUTH) as r:
            assert r.status == 429
            assert abs(int(r.headers["Retry-After"]) - (fake.window_resets["5h"] - time.time())) < 5
    assert len(fake.calls_named("completion")) == 2  # claude.ai never had to refuse anything


async def test_windows_show_in_accounts_metrics_and_the_status_page(make_relay: RelayFactory, fake) -> None:
    from playwright.async_api import async_playwright

    fake.script(LOW, usage={"5h": 0.42, "7d": 0.1})
    fake.script(MID, "server_error", fail_calls=frozenset({"usage"}))  # /usage fails: state untouched
    relay = await make_relay(sessions=f"{LOW},{MID}")
    await eventually(lambda: relay.pool.accounts[0].usage is not None, timeout=10)
    async with aiohttp.ClientSession() as http:
        async with http.get(relay.url + "/v1/accounts", headers=AUTH) as r:
            accounts = (await r.json())["data"]
        async with http.get(relay.url + "/metrics", headers=AUTH) as r:
            metrics = _samples(await r.text())
    usage = accounts[0]["usage"]
    assert usage["5h"] == {"utilization": 0.42, "resets_at": fake.window_resets["5h"], "status": "within_limit"}
    assert usage["7d"]["utilization"] == 0.1 and usage["updated_at"] > time.time() - 60
    assert accounts[1]["usage"] is None and accounts[1]["state"] == "active"
    assert _value(metrics, "relay_account_window_utilization", account="acct-1", window="5h") == 0.42
    assert _value(metrics, "relay_account_window_resets_at", account="acct-1", window="7d") == fake.window_resets["7d"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            await page.goto(relay.url + "/")
            await page.fill("#key", AUTH["Authorization"].removeprefix("Bearer "))
            await page.click("button[type=submit]")
            bar = page.locator("tr[data-alias=acct-1] [data-window='5h'] [role=meter]")
            await bar.wait_for()
            assert await bar.get_attribute("aria-valuenow") == "42"
            assert await bar.locator("div").evaluate("e => e.style.width") == "42%"
            label = await page.locator("tr[data-alias=acct-1] [data-window='5h'] .label").inner_text()
            assert "5h · 42%" in label and "resets in 4h" in label
            assert "not known yet" in await page.locator("tr[data-alias=acct-2] .quota").inner_text()
            await page.screenshot(path="/tmp/relay-quota.png", full_page=True)
        finally:
            await browser.close()


@needs_redis
async def test_windows_are_shared_between_replicas(make_relay: RelayFactory, fake, shared_redis: str) -> None:
    prefix = f"q{time.monotonic_ns()}"
    for key, used in ((LOW, 0.10), (MID, 0.90)):
        fake.script(key, usage={"5h": used}, usage_step=0.001)
    one = await make_relay(sessions=f"{LOW},{MID}", state_url=shared_redis, state_prefix=prefix)
    await _known(one)
    two = await make_relay(sessions=f"{LOW},{MID}", state_url=shared_redis, state_prefix=prefix, usage_refresh=3600)
    await two.pool.refresh()
    assert [round(a.headroom(time.time()), 2) for a in two.pool.accounts] == [0.9, 0.1]
    before = len(fake.calls_named("completion"))
    for _ in range(3):
        await two.openai().chat.completions.create(model=MODEL, messages=HI)
    assert _served_by(fake, before) == {LOW: 3}


def test_window_shapes_from_streams_and_usage() -> None:
    stream = parse_windows(
        {"5h": {"status": "within_limit", "resets_at": 1778593800, "utilization": 0.09}, "odd": "x", "7d": {"utilization": "?"}}
    )
    assert list(stream) == ["5h"] and stream["5h"].utilization == 0.09 and stream["5h"].resets_at == 1778593800
    usage = parse_windows(
        {"five_hour": {"utilization": 95.0, "resets_at": "2026-05-12T13:50:00Z"}, "seven_day_opus": None}, percent=True
    )
    assert usage["5h"].utilization == 0.95 and usage["5h"].resets_at == 1778593800.0
    assert parse_windows(None) == {} and parse_windows([1, 2]) == {}
