"""Usage history per key, account and model, and token budgets per key, over one relay and over
two replicas sharing a real Redis (through an outage too)."""

from __future__ import annotations

import csv
import io
import time
import uuid
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from relay.pool.budgets import periods
from tests.conftest import (
    ADMIN,
    ADMIN_KEY,
    AUTH,
    MODEL,
    RedisServer,
    Relay,
    RelayFactory,
    admin_call,
    eventually,
    needs_redis,
    session_key,
)


async def _make_key(relay: Relay, name: str, **limits: Any) -> str:
    status, made = await admin_call(relay, "POST", "/v1/admin/keys", {"name": name, **limits})
    assert status == 201, made
    return str(made["key"])


async def _ask(relay: Relay, key: str, text: str = "hello there") -> None:
    await relay.openai(api_key=key).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])


async def _usage(relay: Relay, query: str) -> dict[str, Any]:
    status, body = await admin_call(relay, "GET", "/v1/admin/usage?" + query)
    assert status == 200, body
    return dict(body)


async def _key(relay: Relay, name: str) -> dict[str, Any]:
    status, listed = await admin_call(relay, "GET", "/v1/admin/keys")
    assert status == 200
    return next(k for k in listed["data"] if k["name"] == name)


async def test_usage_is_kept_per_key_account_and_model(make_relay: RelayFactory, fake) -> None:  # type: ignore[no-untyped-def]
    fake.script(session_key(1), text="one two three four")
    relay = await make_relay(sessions=session_key(1), admin_key=ADMIN_KEY)
    ada = await _make_key(relay, "ada")
    for _ in range(3):
        await _ask(relay, ada)
    await _ask(relay, AUTH["Authorization"].removeprefix("Bearer "))
    async with aiohttp.ClientSession() as http:  # a bad request is counted as an error of its key
        bad = {"model": MODEL}
        async with http.post(f"{relay.url}/v1/chat/completions", json=bad, headers={"Authorization": f"Bearer {ada}"}) as r:
            assert r.status == 400
    body = await _usage(relay, "period=24h&group=key,account,model")
    assert body["bucket"] == "hour" and body["partial"] is False
    rows = {(r["key"], r["account"], r["model"]): r for r in body["data"]}
    served = rows[("ada", "acct-1", MODEL)]
    assert served["requests"] == 3 and served["errors"] == 0
    assert served["tokens_in"] > 0 and served["tokens_out"] > 0 and served["ttft_ms"] > 0
    assert served["start"] == int(time.time() // 3600 * 3600)
    assert rows[("(apikey)", "acct-1", MODEL)]["requests"] == 1
    assert rows[("ada", "-", "-")] | {"start": 0} == {
        "start": 0, "key": "ada", "account": "-", "model": "-", "requests": 1, "errors": 1,
        "tokens_in": 0, "tokens_out": 0, "ttft_ms": None,
    }  # fmt: skip
    assert body["totals"]["requests"] == 5 and body["totals"]["errors"] == 1
    # Filters, days and CSV.
    daily = await _usage(relay, "period=7d&group=model&key=ada")
    assert daily["bucket"] == "day" and sum(r["requests"] for r in daily["data"]) == 4
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{relay.url}/v1/admin/usage?period=2d&group=key&format=csv", headers=ADMIN) as r:
            assert r.status == 200 and r.content_type == "text/csv"
            table = list(csv.DictReader(io.StringIO(await r.text())))
    assert {row["key"]: int(row["requests"]) for row in table} == {"(apikey)": 1, "ada": 4}
    assert table[0]["start"].endswith(":00:00Z")


@pytest.mark.parametrize(
    ("query", "param"),
    [("period=7w", "period"), ("bucket=minute", "bucket"), ("group=colour", "group"), ("start=yesterday", "start")],
)
async def test_usage_queries_are_checked(make_relay: RelayFactory, fake, query: str, param: str) -> None:  # type: ignore[no-untyped-def]
    relay = await make_relay(admin_key=ADMIN_KEY)
    status, body = await admin_call(relay, "GET", "/v1/admin/usage?" + query)
    assert status == 400 and body["error"]["param"] == param
    status, body = await admin_call(relay, "GET", "/v1/admin/usage", headers=AUTH)
    assert status == 401  # the API key is not the admin key


async def test_usage_history_survives_a_restart_with_state_file(make_relay: RelayFactory, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = {"admin_key": ADMIN_KEY, "state_file": str(tmp_path / "state.json"), "state_plaintext": True}
    first = await make_relay(**settings)
    await _ask(first, AUTH["Authorization"].removeprefix("Bearer "))
    await first.server.close()
    second = await make_relay(**settings)
    body = await _usage(second, "period=24h")
    assert [(r["key"], r["requests"]) for r in body["data"]] == [("(apikey)", 1)]


@needs_redis
async def test_a_daily_budget_holds_across_two_replicas(make_relay: RelayFactory, fake, shared_redis: str) -> None:  # type: ignore[no-untyped-def]
    shared = {"state_url": shared_redis, "state_prefix": f"t{uuid.uuid4().hex[:8]}", "admin_key": ADMIN_KEY}
    fake.script(session_key(1), text=" ".join(["word"] * 60))
    one = await make_relay(sessions=session_key(1), **shared)
    two = await make_relay(sessions=session_key(1), **shared)
    bea = await _make_key(one, "bea", daily_tokens=50)
    await _ask(one, bea)  # within budget when it starts; it crosses the line and finishes

    async def spent_on_two() -> bool:
        return (await _key(two, "bea"))["budget"]["daily"]["remaining"] == 0

    await eventually(spent_on_two)
    shown = await _key(two, "bea")
    day = periods(time.time())[0]
    assert shown["budget"]["daily"] | {"used": 0} == {"tokens": 50, "used": 0, "remaining": 0, "resets_at": day.resets_at}
    assert shown["budget"]["monthly"]["tokens"] is None and shown["budget"]["monthly"]["used"] >= 50
    # Refused on the other replica, in each API's own shape, with the time to the reset.
    with pytest.raises(openai.RateLimitError) as chat:
        await _ask(two, bea)
    wait = int(chat.value.response.headers["Retry-After"])
    assert abs(wait - (day.resets_at - time.time())) < 5
    assert chat.value.code == "key_budget_exceeded" and "daily budget of 50 tokens" in chat.value.message
    assert "resets at" in chat.value.message
    with pytest.raises(openai.RateLimitError):
        await two.openai(api_key=bea).responses.create(model=MODEL, input="hi")
    claude = anthropic.AsyncAnthropic(base_url=two.url, api_key=bea, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as messages:
        await claude.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    await claude.close()
    assert messages.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert len(fake.calls_named("completion")) == 1
    # Raised on one replica, it serves again on the other.
    status, edited = await admin_call(one, "PATCH", "/v1/admin/keys/bea", {"daily_tokens": 100_000})
    assert status == 200 and edited["budget"]["daily_tokens"] == 100_000
    await eventually(lambda: _admitted(two, bea))


async def _admitted(relay: Relay, key: str) -> bool:
    try:
        await _ask(relay, key)
    except openai.RateLimitError:
        return False
    return True


@needs_redis
async def test_history_is_shared_and_survives_a_redis_outage(make_relay: RelayFactory, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path)
    server.start()
    try:
        shared = {"state_url": server.url, "admin_key": ADMIN_KEY}
        one = await make_relay(sessions=session_key(1), **shared)
        two = await make_relay(sessions=session_key(1), **shared)
        cleo = await _make_key(one, "cleo", monthly_tokens=1_000_000)
        await _ask(one, cleo)
        await _ask(two, cleo)

        async def both_counted() -> bool:
            rows = (await _usage(two, "period=24h"))["data"]
            return [(r["key"], r["requests"]) for r in rows] == [("cleo", 2)]

        await eventually(both_counted)
        server.stop()  # Redis goes away: requests go on, counted where they were served
        await _ask(one, cleo)
        away = await _usage(one, "period=24h")
        assert away["partial"] is True and away["data"][0]["requests"] == 2  # this replica's own
        server.start()  # back, but empty (no persistence): what was counted while away is pushed
        await _ask(one, cleo)

        async def pushed() -> bool:  # the request made during the outage and the one after
            body = await _usage(two, "period=24h")
            return not body["partial"] and bool(body["data"]) and body["data"][0]["requests"] == 2

        await eventually(pushed, timeout=10)
        assert (await _key(two, "cleo"))["budget"]["monthly"]["used"] > 0
    finally:
        server.stop()
