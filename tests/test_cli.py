"""The command line as a newcomer uses it: `relay --demo`, and `--insecure-no-auth`."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import anthropic
import openai
import pytest

from relay.__main__ import _loop_factory
from relay.config import ConfigError, Settings
from tests.conftest import fake_url, free_port, session_key, wait_healthy


@asynccontextmanager
async def _relay(*args: str, env: dict[str, str]) -> AsyncIterator[tuple[int, list[bytes]]]:
    """`python -m relay ARGS` on a free port; yields the port and, after it stops, its stderr lines."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "--env-file",
        "/nonexistent",
        *args,
        env={**clean, **env, "PORT": str(port)},
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[bytes] = []
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, port, timeout=30)
        yield port, lines
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        lines.extend(err.splitlines())


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
async def test_demo_serves_an_openai_client_with_no_account(loop: str) -> None:
    async with _relay("--demo", env={"EVENT_LOOP": loop}) as (port, lines):
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="demo", max_retries=0)
        claude = anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{port}", api_key="demo", max_retries=0)
        try:
            stream = await client.chat.completions.create(
                model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hello demo"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            async with claude.messages.stream(
                model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "and again"}]
            ) as messages:
                again = await messages.get_final_text()
        finally:
            await client.close()
            await claude.close()
    assert "demo upstream" in text and "hello demo" in text and "and again" in again
    assert any(b"API key 'demo'" in line for line in lines)
    # uvloop when installed (the test extras and the image have it), asyncio's loop when asked.
    expected = "uvloop" if loop == "auto" and importlib.util.find_spec("uvloop") else "asyncio"
    assert any(f"{expected} event loop".encode() in line for line in lines)


async def test_an_event_loop_that_is_not_installed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="pip install 'relay\\[speed\\]'"):
        _loop_factory("uvloop")
    assert _loop_factory("auto") is None and _loop_factory("asyncio") is None


async def test_insecure_no_auth_serves_without_a_key(fake) -> None:  # type: ignore[no-untyped-def]
    env = {"SESSIONS": session_key(1), "CLAUDE_BASE_URL": fake_url(fake)}
    async with _relay("--insecure-no-auth", env=env) as (port, _), aiohttp.ClientSession() as http:
        body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as r:
            assert r.status == 200
