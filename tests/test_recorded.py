"""Requests recorded from the real CLIs (tests/fixtures, recorded against a scripted endpoint, ids
and paths replaced) replayed through relay: every field they send is accepted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from relay.demo import FakeClaude
from tests.conftest import API_KEY, RelayFactory

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _recorded(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


async def _replay(url: str, recorded: dict[str, Any]) -> tuple[int, str]:
    headers = {**recorded["headers"], "Authorization": f"Bearer {API_KEY}", "x-api-key": API_KEY}
    async with aiohttp.ClientSession() as http, http.post(url + recorded["path"], json=recorded["body"], headers=headers) as r:
        return r.status, await r.text()


async def test_claude_codes_recorded_request_is_answered(make_relay: RelayFactory, fake: FakeClaude) -> None:
    relay = await make_relay()
    status, text = await _replay(relay.url, _recorded("claude_code_messages.json"))
    assert status == 200 and "event: message_stop" in text and "event: error" not in text
    body = fake.calls_named("completion")[-1].body
    sent = body["prompt"] + "".join(a["extracted_content"] for a in body["attachments"])
    assert "x-anthropic-billing-header" not in sent and "cc_version" not in sent  # bookkeeping stays home
    assert "Read" in sent and body["model"] == "claude-opus-4-8"


async def test_codexs_recorded_request_is_answered(make_relay: RelayFactory, fake: FakeClaude) -> None:
    relay = await make_relay(model_aliases="gpt-5.5=claude-opus-5-5")
    status, text = await _replay(relay.url, _recorded("codex_responses.json"))
    assert status == 200 and "event: response.completed" in text and "response.failed" not in text
    body = fake.calls_named("completion")[-1].body
    sent = body["prompt"] + "".join(a["extracted_content"] for a in body["attachments"])
    assert "apply_patch" in sent and "tool_search" in sent and "exec_command" in sent  # freeform and search tools offered
    assert body["model"] == "claude-opus-5-5"
