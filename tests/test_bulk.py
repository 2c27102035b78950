"""Accounts in bulk: fifty cookies pasted at once get fifty verdicts; the export is masked unless
asked for in full with ADMIN_KEY, and a full export imports into another relay."""

from __future__ import annotations

from collections import Counter
from typing import Any

import aiohttp

from tests.conftest import ADMIN, ADMIN_KEY, AUTH, HI, MODEL, Relay, RelayFactory, admin_call, session_key


async def _import(relay: Relay, body: str | dict[str, Any], headers: dict[str, str] = ADMIN) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        kwargs: dict[str, Any] = {"json": body} if isinstance(body, dict) else {"data": body.encode()}
        headers = headers if isinstance(body, dict) else {**headers, "Content-Type": "text/plain"}
        async with http.post(f"{relay.url}/v1/admin/accounts/import", headers=headers, **kwargs) as r:
            return r.status, await r.json()


async def test_fifty_cookies_get_fifty_verdicts(make_relay: RelayFactory, fake) -> None:  # type: ignore[no-untyped-def]
    relay = await make_relay(sessions=session_key(1), admin_key=ADMIN_KEY)
    for n in (40, 41, 42):
        fake.script(session_key(n), "invalid")
    fake.script(session_key(43), "no_chat_org")
    sid02 = session_key(44).replace("sid01", "sid02")
    lines = [f"{session_key(n)}" for n in range(2, 40)]
    lines += [f"{session_key(n)}" for n in (40, 41, 42, 43)]
    lines += [f"{sid02}:0d3c4e5f-aaaa-bbbb-cccc-000000000044", session_key(45), session_key(46)]
    lines += [session_key(1), session_key(2), "sk-ant-sid01-short", f"{session_key(47)}@ftp://nowhere", session_key(48)]
    assert len(lines) == 50
    text = "# cookies from the team sheet\n\n" + "\n".join(lines) + "\n"
    status, body = await _import(relay, text)
    assert status == 200, body
    results = body["results"]
    assert len(results) == 50 and body["counts"] == {"added": 42, "exists": 2, "refused": 4, "invalid": 2}
    by_key = {r["key"]: r for r in results if r["key"]}
    assert all("..." in k for k in by_key)  # never a full cookie in the answer
    refused = [r for r in results if r["status"] == "refused"]
    assert [r["entry"] for r in refused] == [41, 42, 43, 44]  # entries count from the first line of the text
    assert "invalid" in refused[0]["message"].lower() or "expired" in refused[0]["message"].lower()
    invalid = [r for r in results if r["status"] == "invalid"]
    assert {r["entry"] for r in invalid} == {50, 51} and "proxy" in invalid[1]["message"]
    assert Counter(r["status"] for r in results if r["entry"] in (48, 49)) == {"exists": 2}
    sid02_result = next(r for r in results if r["key"] and r["key"].startswith("sk-ant-sid02-"))
    assert sid02_result["status"] == "added" and sid02_result["org_id"] == "0d3c4e5f-aaaa-bbbb-cccc-000000000044"
    assert sid02_result["alias"] == "acct-40"
    assert len(relay.pool) == 43
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{relay.url}/v1/accounts", headers=AUTH) as r:
            assert len((await r.json())["data"]) == 43
    assert (await relay.openai().chat.completions.create(model=MODEL, messages=HI)).choices


async def test_export_is_masked_unless_asked_in_full_with_the_admin_key(make_relay: RelayFactory, fake) -> None:  # type: ignore[no-untyped-def]
    sessions = f"{session_key(1)},{session_key(2)}@socks5://user:secret@127.0.0.1:1080"
    relay = await make_relay(sessions=sessions, admin_key=ADMIN_KEY)
    status, masked = await admin_call(relay, "GET", "/v1/admin/accounts/export")
    assert status == 200 and masked["full"] is False
    text = str(masked)
    assert session_key(1) not in text and session_key(2) not in text and "secret" not in text
    assert [a["proxy"] for a in masked["accounts"]] == [None, "socks5://127.0.0.1:1080"]
    status, full = await admin_call(relay, "GET", "/v1/admin/accounts/export?full=true")
    assert status == 200 and [a["session_key"] for a in full["accounts"]] == [session_key(1), session_key(2)]
    assert full["accounts"][1]["proxy"] == "socks5://user:secret@127.0.0.1:1080"
    # A masked export cannot move accounts; a full one can.
    other = await make_relay(sessions=session_key(3), admin_key=ADMIN_KEY)
    status, body = await _import(other, masked)
    assert status == 200 and {r["status"] for r in body["results"]} == {"invalid"}
    assert "masked" in body["results"][0]["message"]
    full["accounts"] = full["accounts"][:1]  # the proxied one would need its proxy to answer
    status, body = await _import(other, full)
    assert status == 200 and body["counts"]["added"] == 1 and len(other.pool) == 2


async def test_full_export_needs_an_admin_key_of_its_own(make_relay: RelayFactory, fake) -> None:  # type: ignore[no-untyped-def]
    relay = await make_relay()  # admin routes take APIKEY: a client key holder must not get every cookie
    status, body = await admin_call(relay, "GET", "/v1/admin/accounts/export?full=1", headers=AUTH)
    assert status == 403 and body["error"]["code"] == "admin_key_required"
    status, body = await admin_call(relay, "GET", "/v1/admin/accounts/export", headers=AUTH)
    assert status == 200 and len(body["accounts"]) == 3


async def test_bad_imports_are_refused_whole(make_relay: RelayFactory, fake) -> None:  # type: ignore[no-untyped-def]
    relay = await make_relay(admin_key=ADMIN_KEY)
    assert (await _import(relay, "\n# only a comment\n"))[0] == 400
    assert (await _import(relay, {"accounts": "nope"}))[0] == 400
    status, body = await _import(relay, "\n".join(session_key(n) for n in range(1, 1003)))
    assert status == 400 and "at most 1000" in body["error"]["message"]
    status, body = await _import(relay, session_key(9), headers=AUTH)
    assert status == 401
