"""Claude Code itself, pointed at the relay (with the fake upstream behind it), answers a prompt."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from tests.conftest import API_KEY, Relay, session_key
from tests.test_inputs import tiny_png

# .ci/run installs Claude Code from the npm registry and names the binary here.
BINARY = os.environ.get("RELAY_CLAUDE_CODE", "")


async def _claude(relay: Relay, home: Path, *args: str) -> str:
    """Claude Code run once against the relay, in a home of its own; its output."""
    env = {
        **os.environ,
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": relay.url,
        "ANTHROPIC_API_KEY": API_KEY,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        BINARY, *args, env=env, cwd=home, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode()


@pytest.mark.skipif(not BINARY and not os.environ.get("CI"), reason="set RELAY_CLAUDE_CODE to a claude binary to run")
async def test_claude_code_answers_through_the_relay(relay: Relay, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert BINARY and os.path.exists(BINARY), "CI must provide Claude Code (RELAY_CLAUDE_CODE)"
    for n in (1, 2, 3):
        fake.script(session_key(n), text="Four, as always.")
    out = await _claude(relay, tmp_path, "-p", "What is 2+2?")
    assert "Four, as always." in out
    body = fake.calls_named("completion")[-1].body
    assert "What is 2+2?" in body["prompt"] + "".join(a["extracted_content"] for a in body["attachments"])


@pytest.mark.skipif(not BINARY and not os.environ.get("CI"), reason="set RELAY_CLAUDE_CODE to a claude binary to run")
async def test_claude_code_web_search_returns_results_through_the_relay(relay: Relay, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Claude Code's WebSearch asks for Anthropic's web search server tool; relay switches claude.ai's
    search on for that conversation and answers with server_tool_use and web_search_tool_result blocks."""
    assert BINARY and os.path.exists(BINARY), "CI must provide Claude Code (RELAY_CLAUDE_CODE)"

    def reply(model: str, prompt: str) -> str:
        if "[tool result (" in prompt:
            return "The search says relays are fast today."
        if "<tool_call>" not in prompt:  # WebSearch's own request offers no functions
            return "Relays are fast today."
        return '<tool_call>{"name": "WebSearch", "arguments": {"query": "relay news"}}</tool_call>'

    fake.reply = reply
    for n in (1, 2, 3):
        fake.script(session_key(n), search="relay news")
    out = await _claude(relay, tmp_path, "-p", "Search the web for relay news", "--allowedTools", "WebSearch")
    assert "The search says relays are fast today." in out
    bodies = [c.body for c in fake.calls_named("completion")]
    searched = [b for b in bodies if {"type": "web_search_v0", "name": "web_search"} in b["tools"]]
    assert len(searched) == 1 and "relay news" in searched[0]["prompt"]
    # What WebSearch made of the web_search_tool_result blocks went back into the conversation.
    assert "https://example.org/1" in bodies[-1]["prompt"] + "".join(a["extracted_content"] for a in bodies[-1]["attachments"])


@pytest.mark.skipif(not BINARY and not os.environ.get("CI"), reason="set RELAY_CLAUDE_CODE to a claude binary to run")
async def test_a_claude_code_session_with_a_tool_round_trip_is_one_chat(relay: Relay, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert BINARY and os.path.exists(BINARY), "CI must provide Claude Code (RELAY_CLAUDE_CODE)"
    notes = tmp_path / "notes.txt"
    notes.write_text("the launch moved to friday\n")

    def reply(model: str, conversation: str) -> str:
        if "[tool result (" in conversation:
            return "The notes say the launch moved to Friday."
        if "Read" not in conversation:  # Claude Code's side requests (titles, summaries) offer no Read
            return "Notes."
        return f"<tool_call>{json.dumps({'name': 'Read', 'arguments': {'file_path': str(notes)}})}</tool_call>"

    fake.reply = reply
    out = await _claude(relay, tmp_path, "-p", "What do my notes in notes.txt say?", "--allowedTools", "Read")
    assert "launch moved to Friday" in out
    calls = fake.calls_named("completion")
    result = next(i for i, c in enumerate(calls) if "[tool result (" in c.body["prompt"])
    asked = next(i for i in range(result - 1, -1, -1) if calls[i].path == calls[result].path)
    # The turn with the file's content continued the chat that asked for it, sending only what is new.
    parent = calls[asked].body["turn_message_uuids"]["assistant_message_uuid"]
    assert calls[result].body["parent_message_uuid"] == parent
    assert "What do my notes" not in calls[result].body["prompt"]


@pytest.mark.skipif(not BINARY and not os.environ.get("CI"), reason="set RELAY_CLAUDE_CODE to a claude binary to run")
async def test_claude_code_reads_an_image_and_claude_ai_gets_it(relay: Relay, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert BINARY and os.path.exists(BINARY), "CI must provide Claude Code (RELAY_CLAUDE_CODE)"
    shot = tmp_path / "shot.png"
    shot.write_bytes(tiny_png())

    def reply(model: str, conversation: str) -> str:
        if "[tool result (" in conversation:
            return "It is a one-pixel image."
        if "Read" not in conversation:
            return "Image."
        return f"<tool_call>{json.dumps({'name': 'Read', 'arguments': {'file_path': str(shot)}})}</tool_call>"

    fake.reply = reply
    out = await _claude(relay, tmp_path, "-p", "What is in shot.png?", "--allowedTools", "Read")
    assert "one-pixel image" in out
    uploaded = [f for c in fake.calls_named("upload") for f in c.files]
    assert uploaded and uploaded[0][1].startswith("image/")  # Read's image reached claude.ai as an upload
    result = next(c for c in fake.calls_named("completion") if "[tool result (Read" in c.body["prompt"])
    assert "[image 1]" in result.body["prompt"] and result.body["files"]


@pytest.mark.skipif(not BINARY and not os.environ.get("CI"), reason="set RELAY_CLAUDE_CODE to a claude binary to run")
async def test_a_call_to_webfetch_reaches_claude_code_as_a_call(relay: Relay, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """WebFetch is one of the tools Claude Code may defer (loaded through ToolSearch); whether it
    is offered yet or not, the model's call reaches Claude Code as a call, which it runs."""
    assert BINARY and os.path.exists(BINARY), "CI must provide Claude Code (RELAY_CLAUDE_CODE)"
    fetch = {"name": "WebFetch", "arguments": {"url": "http://127.0.0.1:9/page", "prompt": "Summarise"}}

    def reply(model: str, conversation: str) -> str:
        if "[tool result (WebFetch" in conversation:
            return "The page could not be fetched."
        if "WebFetch" not in conversation and "ToolSearch" not in conversation:
            return "Page."
        return f"<tool_call>{json.dumps(fetch)}</tool_call>"

    fake.reply = reply
    out = await _claude(relay, tmp_path, "-p", "Summarise http://127.0.0.1:9/page", "--allowedTools", "WebFetch")
    assert "could not be fetched" in out
    assert any("[tool result (WebFetch" in c.body["prompt"] for c in fake.calls_named("completion"))
