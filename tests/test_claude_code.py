"""Claude Code itself, pointed at the relay (with the fake upstream behind it), answers a prompt."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.conftest import API_KEY, Relay, session_key

# .ci/run installs Claude Code from the npm registry and names the binary here.
BINARY = os.environ.get("RELAY_CLAUDE_CODE", "")


@pytest.mark.skipif(not BINARY and not os.environ.get("CI"), reason="set RELAY_CLAUDE_CODE to a claude binary to run")
async def test_claude_code_answers_through_the_relay(relay: Relay, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert BINARY and os.path.exists(BINARY), "CI must provide Claude Code (RELAY_CLAUDE_CODE)"
    for n in (1, 2, 3):
        fake.script(session_key(n), text="Four, as always.")
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "ANTHROPIC_BASE_URL": relay.url,
        "ANTHROPIC_API_KEY": API_KEY,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        BINARY, "-p", "What is 2+2?", env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "Four, as always." in out.decode()
    body = fake.calls_named("completion")[-1].body
    assert "What is 2+2?" in body["prompt"] + "".join(a["extracted_content"] for a in body["attachments"])
