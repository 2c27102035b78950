"""An account with a proxy of its own sends every claude.ai call through it; the others do not."""

from __future__ import annotations

import aiohttp
import pytest

from relay.config import SessionSpec
from tests.conftest import AUTH, HI, MODEL, LoopbackProxy, RelayFactory, eventually, session_key


async def test_an_account_with_its_own_proxy_uses_it_for_every_call(make_relay: RelayFactory, fake, proxy: LoopbackProxy) -> None:
    relay = await make_relay(sessions=f"{session_key(1)}@{proxy.url},{session_key(2)}", conversations="fresh")
    await eventually(lambda: all(a.org_id for a in relay.pool.accounts))
    async with aiohttp.ClientSession() as http:
        for _ in range(4):
            async with http.post(relay.url + "/v1/chat/completions", json={"model": MODEL, "messages": HI}, headers=AUTH) as r:
                assert r.status == 200
        async with http.get(relay.url + "/v1/accounts", headers=AUTH) as r:
            accounts = (await r.json())["data"]
    await eventually(lambda: len(fake.deleted) == 4)
    through = [c for c in fake.calls if c.session_key == session_key(1)]
    assert {c.name for c in through} >= {"orgs", "completion", "delete"}
    # Every call of the first account went through the proxy, none of the second's.
    assert len([line for line in proxy.seen if "127.0.0.1" in line]) == len(through)
    assert all(line.split(" ")[0] in ("GET", "POST", "PUT", "DELETE") for line in proxy.seen)
    assert accounts[0]["proxy"] == proxy.url and accounts[1]["proxy"] is None


def test_session_entries_take_a_proxy_and_hide_its_password() -> None:
    spec = SessionSpec.parse(f"{session_key(1)}:0b6f5e0c-aaaa-bbbb-cccc-0123456789ab@socks5://user:secret@10.0.0.1:1080")
    assert spec.org_id == "0b6f5e0c-aaaa-bbbb-cccc-0123456789ab" and spec.proxy is not None
    assert "secret" not in repr(spec)
    with pytest.raises(ValueError):
        SessionSpec.parse(f"{session_key(1)}@ftp://host")


async def test_mirror_keys_cannot_name_a_proxy(make_relay: RelayFactory, fake, proxy: LoopbackProxy) -> None:
    relay = await make_relay(enable_mirror_api=True, mirror_api_prefix="/mirror")
    async with aiohttp.ClientSession() as http:
        body = {"model": MODEL, "messages": HI}
        headers = {"Authorization": f"Bearer {session_key(9)}@{proxy.url}"}
        async with http.post(relay.url + "/mirror/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status == 401
    assert not proxy.seen
