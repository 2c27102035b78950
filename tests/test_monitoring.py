"""Metrics, stats, JSON logs and the status page, checked against what the relay really did."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families

from relay.logs import configure_logging
from relay.pool.account import State
from tests.conftest import API_KEY, AUTH, HI, Relay, RelayFactory, eventually, session_key

CHROMIUM = "/usr/bin/chromium"


async def _get(relay: Relay, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(relay.url + path, headers=headers or {}) as r:
        return r.status, await r.text()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value for family in text_string_to_metric_families(text) for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


async def _scripted_mix(relay: Relay, fake: Any) -> None:
    """Three answers, the first after a failover (acct-1 overloaded), then a dead pool (503)."""
    await eventually(lambda: all(a.org_id for a in relay.pool.accounts))
    client = relay.openai()
    fake.script(session_key(1), "overloaded")
    for _ in range(3):
        await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    for n in (1, 2):
        fake.script(session_key(n), "invalid")
    with pytest.raises(openai.APIStatusError):
        await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI)


async def test_metrics_count_what_happened(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}", conversations="fresh")
    await _scripted_mix(relay, fake)
    refused = 2  # the two invalid attempts created nothing, so nothing is deleted for them
    answered = fake.calls_named("completion")[:-refused]
    await eventually(lambda: len(fake.deleted) == len(answered))
    status, text = await _get(relay, "/metrics", AUTH)
    assert status == 200
    s = _samples(text)
    route = "/v1/chat/completions"
    assert _value(s, "relay_requests_total", route=route, status="200", model="claude-sonnet-4-6") == 3
    assert _value(s, "relay_requests_total", route=route, status="503") == 1
    # acct-1 was overloaded on the first request, then backed off (the next two went straight to
    # acct-2); at the end both accounts were refused
    assert _value(s, "relay_failovers_total", cause="transient") == 1
    assert _value(s, "relay_failovers_total", cause="invalid") == 1
    assert _value(s, "relay_upstream_errors_total", kind="transient") == 1
    assert _value(s, "relay_upstream_errors_total", kind="invalid") == 2
    assert _value(s, "relay_accounts", state="invalid") == 2 and _value(s, "relay_accounts", state="active") == 0
    assert _value(s, "relay_ttfb_seconds_count", route=route) == 3
    assert _value(s, "relay_tokens_total", direction="in") > 0 and _value(s, "relay_tokens_total", direction="out") > 0
    assert _value(s, "relay_chats_deleted_total") == len(answered)
    assert not fake.conversations
    assert _value(s, "relay_streams_open") == 0 and _value(s, "relay_requests_in_flight") == 0


async def test_stats_agree_with_metrics_and_mask_keys(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    await _scripted_mix(relay, fake)
    status, text = await _get(relay, "/stats", AUTH)
    assert status == 200
    stats = json.loads(text)
    m = stats["metrics"]
    assert sum(v for k, v in m["relay_requests_total"].items() if "status=200" in k and "chat/completions" in k) == 3
    assert [a["state"] for a in stats["accounts"]] == ["invalid", "invalid"]
    assert stats["uptime_seconds"] >= 0
    for n in (1, 2):
        assert session_key(n) not in text


async def test_metrics_and_stats_need_the_key(make_relay: RelayFactory) -> None:
    relay = await make_relay()
    assert (await _get(relay, "/metrics"))[0] == 401
    assert (await _get(relay, "/stats"))[0] == 401
    public = await make_relay(metrics_public=True)
    assert (await _get(public, "/metrics"))[0] == 200
    assert (await _get(public, "/stats"))[0] == 401


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    configure_logging("INFO", ["super-secret-api-key"], "json")
    yield capsys
    logger.remove()
    logger.add(sys.stderr)


def test_json_logs_are_one_object_a_line_without_secrets(json_logs: pytest.CaptureFixture[str]) -> None:
    logger.bind(request_id="req_1", status=200).info("cookie {} and key {}", session_key(1), "super-secret-api-key")
    line = json.loads(json_logs.readouterr().err.strip().splitlines()[-1])
    assert line["request_id"] == "req_1" and line["status"] == 200 and line["level"] == "INFO"
    assert session_key(1) not in line["message"] and "sk-ant-sid01-..." in line["message"]
    assert "super-secret-api-key" not in line["message"]


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"), reason="needs Debian's chromium")
async def test_status_page_in_a_real_browser(make_relay: RelayFactory, fake) -> None:
    from playwright.async_api import async_playwright

    fake.script(session_key(2), "invalid")
    for n in (1, 3):
        fake.script(session_key(n), "drift")  # claude.ai sends a block type relay does not know
    relay = await make_relay()
    await eventually(lambda: relay.pool.accounts[1].state is State.INVALID)
    await relay.openai().chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            await page.goto(relay.url + "/")
            await page.wait_for_selector("#key", state="visible")
            before = await page.content()
            assert "acct-1" not in before and "sk-ant" not in before
            await page.fill("#key", "wrong")
            await page.click("button[type=submit]")
            await page.wait_for_selector("#login-error", state="visible")
            await page.fill("#key", API_KEY)
            await page.click("button[type=submit]")
            await page.wait_for_selector("tr[data-alias=acct-3]")
            rows = await page.locator("#accounts tr").all_inner_texts()
            assert len(rows) == 3
            assert "invalid" in rows[1] and "active" in rows[0]
            assert "sk-ant-sid01-...02AA" in rows[1]
            assert await page.locator("#url-openai").inner_text() == relay.url + "/v1"
            await page.wait_for_selector("#drift", state="visible")
            assert "canvas_delta" in await page.locator("#drift-rows").inner_text()
            dom = await page.content()
            for n in (1, 2, 3):
                assert session_key(n) not in dom
            assert API_KEY not in dom
            await page.screenshot(path="/tmp/relay-status.png", full_page=True)
        finally:
            await browser.close()


async def test_what_claude_ai_sends_that_relay_does_not_know_is_counted_and_logged_once(
    make_relay: RelayFactory,
    fake,
    json_logs: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    fake.script(session_key(1), "drift", text="still answered")
    relay = await make_relay(sessions=session_key(1))
    unknown = ("relay_upstream_unknown_total", "event", "message_annotation")
    before = _value(_samples((await _get(relay, "/metrics", AUTH))[1]), unknown[0], kind=unknown[1], type=unknown[2])
    for _ in range(2):
        answer = await relay.openai().chat.completions.create(model="claude-sonnet-4-6", messages=HI)
        assert answer.choices[0].message.content == "still answered"
    fake.script(session_key(1), "new_error")
    with pytest.raises(openai.APIStatusError):
        await relay.openai().chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    samples = _samples((await _get(relay, "/metrics", AUTH))[1])
    assert _value(samples, unknown[0], kind=unknown[1], type=unknown[2]) == before + 2  # counted per process
    assert _value(samples, "relay_upstream_unknown_total", kind="content_block", type="canvas") >= 2
    assert _value(samples, "relay_upstream_unknown_total", kind="delta", type="canvas_delta") >= 2
    assert _value(samples, "relay_upstream_unknown_total", kind="error", type="conversation_locked_error") >= 1
    stats = json.loads((await _get(relay, "/stats", AUTH))[1])
    seen = {(u["kind"], u["type"]): u for u in stats["upstream_unknown"]}
    assert seen[("event", "message_annotation")]["first_seen"] <= stats["now"]
    lines = [json.loads(line)["message"] for line in json_logs.readouterr().err.splitlines() if "unknown" in line]
    about_event = [line for line in lines if "'message_annotation'" in line]
    assert len(about_event) == (0 if before else 1)  # the first of its type only
    assert all("sk-ant-sid01-LeakedFromUpstream" not in line for line in lines)
