"""The status page's operator parts in a real browser, on a phone-sized screen, with real clicks:
usage charts, budgets, bulk import and export."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY, API_KEY, MODEL, RelayFactory, admin_call, session_key

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"), reason="needs Debian's chromium")
async def test_usage_charts_budgets_import_and_export_in_a_real_browser(make_relay: RelayFactory, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.async_api import async_playwright

    fake.script(session_key(7), "invalid")
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}", admin_key=ADMIN_KEY)
    status, made = await admin_call(relay, "POST", "/v1/admin/keys", {"name": "ada", "daily_tokens": 5000})
    assert status == 201
    for key in (made["key"], made["key"], API_KEY):
        await relay.openai(api_key=key).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            context = await browser.new_context(viewport={"width": 390, "height": 844}, accept_downloads=True)
            page = await context.new_page()
            leaving: list[str] = []
            page.on("request", lambda r: leaving.append(r.url) if not r.url.startswith((relay.url, "blob:", "data:")) else None)
            await page.goto(relay.url + "/")
            await page.fill("#key", API_KEY)
            await page.click("button[type=submit]")
            await page.wait_for_selector("tr[data-alias=acct-2]")
            assert await page.locator("#usage").is_hidden()  # the API key is not the admin key
            await page.fill("#admin-key", ADMIN_KEY)
            await page.click("h1")  # leaving the field commits it
            # Charts: one per key, bars stacked by model, drawn by the page itself.
            await page.wait_for_selector("#usage figure[data-group=ada] rect")
            captions = await page.locator("#usage figcaption").all_inner_texts()
            assert captions == ["(apikey) · 1 requests", "ada · 2 requests"]
            assert await page.locator("#usage-legend [data-model]").all_inner_texts() == [MODEL]
            await page.select_option("#usage-by", "account")
            await page.select_option("#usage-metric", "tokens")
            await page.wait_for_selector("#usage figure[data-group=acct-1], #usage figure[data-group=acct-2]")
            assert all("tokens" in c for c in await page.locator("#usage figcaption").all_inner_texts())
            # Budgets: shown per key, edited in place.
            row = page.locator("tr[data-key=ada]")
            assert "of 5,000 tokens" in await row.locator("[data-period=daily]").inner_text()
            await row.locator("input[name=daily_tokens]").fill("12000")
            await row.locator("button", has_text="Save budget").click()
            await page.wait_for_selector("tr[data-key=ada] >> text=of 12,000 tokens")
            listed = (await admin_call(relay, "GET", "/v1/admin/keys"))[1]["data"]
            assert listed[0]["budget"]["daily_tokens"] == 12000
            # Bulk import: one verdict per line.
            await page.fill("#import-text", f"{session_key(5)}\n{session_key(7)}\nnot-a-cookie\n{session_key(1)}")
            await page.click("#import-form button[type=submit]")
            await page.wait_for_selector("#import-results tr[data-entry='4']")
            statuses = [await r.get_attribute("data-status") for r in await page.locator("#import-results tr").all()]
            assert statuses == ["added", "refused", "invalid", "exists"]
            assert "1 added, 1 exists, 1 refused, 1 invalid" == await page.locator("#import-summary").inner_text()
            assert len(relay.pool) == 3
            # Export: masked by default, full cookies on request.
            async with page.expect_download() as masked_download:
                await page.click("#export")
            masked = json.loads(Path(await (await masked_download.value).path()).read_text())
            assert len(masked["accounts"]) == 3 and session_key(1) not in json.dumps(masked)
            async with page.expect_download() as full_download:
                await page.click("#export-full")
            full = json.loads(Path(await (await full_download.value).path()).read_text())
            assert [a["session_key"] for a in full["accounts"]] == [session_key(n) for n in (1, 2, 5)]
            dom = await page.content()
            assert all(session_key(n) not in dom for n in (1, 2, 5)) and ADMIN_KEY not in dom
            assert leaving == []  # nothing from a CDN or anywhere else
            await page.screenshot(path=str(tmp_path / "operator.png"), full_page=True)
        finally:
            await browser.close()
