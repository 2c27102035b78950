"""Accounts added, checked and removed while relay runs, through the admin API."""

from __future__ import annotations

import time

from tests.conftest import ADMIN, AUTH, HI, MODEL, STATE_SECRET, RelayFactory, admin_call, eventually, needs_redis, session_key


async def test_an_added_account_is_checked_serves_and_survives_a_restart(make_relay: RelayFactory, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = str(tmp_path / "state.json")
    relay = await make_relay(
        sessions=session_key(1), admin_key="admin-key-0123456789", state_file=state, state_secret=STATE_SECRET
    )
    status, account = await admin_call(relay, "POST", "/v1/admin/accounts", {"session_key": session_key(2)})
    assert status == 201 and account["alias"] == "acct-2" and account["key"].startswith("sk-ant-sid01-...")
    assert session_key(2) not in str(account) and account["org_id"]
    assert [c.name for c in fake.calls if c.session_key == session_key(2)] == ["orgs"]  # checked first
    fake.script(session_key(1), "invalid")
    done = await relay.openai().chat.completions.create(model=MODEL, messages=HI)
    assert done.choices[0].message.content and fake.calls_named("completion")[-1].session_key == session_key(2)
    status, _ = await admin_call(relay, "POST", "/v1/admin/accounts", {"session_key": session_key(2)})
    assert status == 409
    again = await make_relay(
        sessions=session_key(1), admin_key="admin-key-0123456789", state_file=state, state_secret=STATE_SECRET
    )
    status, listed = await admin_call(again, "GET", "/v1/accounts", headers=AUTH)
    assert [a["key"][-4:] for a in listed["data"]] == [session_key(1)[-4:], session_key(2)[-4:]]


async def test_refused_cookies_and_proxies_are_422_and_keys_are_kept_apart(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(admin_key="admin-key-0123456789")
    fake.script(session_key(5), "invalid")
    status, body = await admin_call(relay, "POST", "/v1/admin/accounts", {"session_key": session_key(5)})
    assert status == 422 and body["error"]["code"] == "session_key_refused"
    status, body = await admin_call(relay, "POST", "/v1/admin/accounts", {"session_key": session_key(6), "proxy": "ftp://x"})
    assert status == 422 and body["error"]["param"] == "proxy"
    status, _ = await admin_call(relay, "POST", "/v1/admin/accounts", {"session_key": "not-a-cookie"})
    assert status == 422
    status, _ = await admin_call(relay, "POST", "/v1/admin/accounts", {"session_key": session_key(7)}, headers=AUTH)
    assert status == 401  # the API key is not the admin key
    assert len(relay.pool) == 3


async def test_removing_an_account_never_cuts_its_stream(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), text=" ".join(["w"] * 30), chunk_delay=0.03)
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}", admin_key="admin-key-0123456789")
    await eventually(lambda: all(a.org_id for a in relay.pool.accounts))
    stream = await relay.openai().chat.completions.create(model=MODEL, messages=HI, stream=True)
    chunks = []
    async for chunk in stream:
        chunks.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
        if len(chunks) == 3:
            status, body = await admin_call(relay, "DELETE", "/v1/admin/accounts/acct-1")
            assert status == 202 and body["removing"] and body["in_flight"] == 1
            await relay.openai().chat.completions.create(model=MODEL, messages=HI)  # goes to acct-2
    assert "".join(chunks) == " ".join(["w"] * 30)
    await eventually(lambda: len(relay.pool) == 1)
    assert relay.pool.accounts[0].key == session_key(2)
    status, _ = await admin_call(relay, "DELETE", "/v1/admin/accounts/acct-9")
    assert status == 404


async def test_check_brings_a_fixed_account_back(make_relay: RelayFactory, fake) -> None:
    behavior = fake.script(session_key(1), "invalid")
    relay = await make_relay(sessions=session_key(1))  # no ADMIN_KEY: APIKEY is the admin key
    await eventually(lambda: relay.pool.accounts[0].state.value == "invalid")
    behavior.mode = "ok"
    status, account = await admin_call(relay, "POST", "/v1/admin/accounts/acct-1/check", headers=AUTH)
    assert status == 200 and account["state"] == "active"


@needs_redis
async def test_a_second_replica_takes_in_added_accounts(make_relay: RelayFactory, fake, shared_redis: str) -> None:
    prefix = f"a{time.monotonic_ns()}"
    one = await make_relay(
        sessions=session_key(1),
        state_url=shared_redis,
        state_prefix=prefix,
        admin_key="admin-key-0123456789",
        state_secret=STATE_SECRET,
    )
    two = await make_relay(sessions=session_key(1), state_url=shared_redis, state_prefix=prefix, state_secret=STATE_SECRET)
    status, _ = await admin_call(one, "POST", "/v1/admin/accounts", {"session_key": session_key(3)})
    assert status == 201
    await two.pool.refresh()
    assert [a.key for a in two.pool.accounts] == [session_key(1), session_key(3)]


async def test_the_operator_page_adds_checks_and_removes_with_real_clicks(make_relay: RelayFactory, fake) -> None:
    from playwright.async_api import async_playwright

    from tests.test_monitoring import CHROMIUM

    relay = await make_relay(sessions=session_key(1), admin_key="admin-key-0123456789")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            await page.goto(relay.url + "/")
            await page.fill("#key", AUTH["Authorization"].removeprefix("Bearer "))
            await page.click("button[type=submit]")
            await page.wait_for_selector("tr[data-alias=acct-1]")
            await page.fill("#admin-key", ADMIN["Authorization"].removeprefix("Bearer "))
            await page.press("#admin-key", "Enter")
            await page.fill("#new-session", session_key(2))
            await page.click("#add-account button[type=submit]")
            await page.wait_for_selector("tr[data-alias=acct-2]")
            assert session_key(2) not in await page.content()
            await page.click("tr[data-alias=acct-1] [data-action=check]")
            await page.wait_for_function("document.getElementById('admin-message').textContent.includes('Check acct-1: done')")
            await page.fill("#key-name", "alice")
            await page.fill("#key-rpm", "5")
            await page.click("#add-key button[type=submit]")
            await page.wait_for_selector("tr[data-key=alice]")
            made = await page.inner_text("#new-key-value")
            assert made.startswith("rk-") and "5/min" in await page.inner_text("tr[data-key=alice]")
            await page.click("tr[data-key=alice] [data-action=remove-key]")
            await page.wait_for_selector("tr[data-key=alice]", state="detached")
            await page.click("tr[data-alias=acct-2] [data-action=remove]")
            await page.wait_for_selector("tr[data-alias=acct-2]", state="detached")
            await page.screenshot(path="/tmp/relay-operator.png", full_page=True)
        finally:
            await browser.close()
    assert [a.key for a in relay.pool.accounts] == [session_key(1)]
    assert [c.session_key for c in fake.calls_named("orgs")].count(session_key(2)) == 1  # checked once, when added
