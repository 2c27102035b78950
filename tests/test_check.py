"""`relay check`: the command an operator runs to see which accounts can serve, as a real process."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from relay.demo.fake_claude import FakeClaude
from tests.conftest import fake_url, session_key

ROOT = Path(__file__).resolve().parent.parent


async def _check(fake_url: str, sessions: str, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    env.update(SESSIONS=sessions, CLAUDE_BASE_URL=fake_url, LOG_LEVEL="ERROR")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "check", "--env-file", "/nonexistent", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_each_account_gets_a_verdict_and_one_that_serves_is_enough(fake: FakeClaude) -> None:
    fake.script(session_key(2), "invalid")
    fake.script(session_key(3), "rate_limited")
    keys = [session_key(n) for n in (1, 2, 3)]
    code, out = await _check(fake_url(fake), ",".join(keys), "--complete")
    assert code == 0, out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("sk-ant-")}
    assert " ok " in lines["sk-ant-sid01-...01AA"] and "pro" in lines["sk-ant-sid01-...01AA"]
    assert "5h 0%" in lines["sk-ant-sid01-...01AA"]
    assert "refused: invalid" in lines["sk-ant-sid01-...02AA"]
    assert "cannot complete: rate_limited" in lines["sk-ant-sid01-...03AA"]
    assert "1 of 3 account(s) can serve" in out
    assert not any(k in out for k in keys)  # keys only masked
    # The one-word probe ran in a chat of its own, deleted afterwards.
    assert len(fake.calls_named("completion")) == 2 and len(fake.calls_named("delete")) >= 1


async def test_no_account_that_can_serve_is_a_failed_check(fake: FakeClaude) -> None:
    fake.script(session_key(1), "invalid")
    code, out = await _check(fake_url(fake), session_key(1))
    assert code == 1 and "0 of 1 account(s) can serve" in out
    assert not fake.calls_named("completion")  # without --complete nothing is asked of the model


async def test_check_works_against_the_demo() -> None:
    code, out = await _check("http://127.0.0.1:9", "", "--demo", "--complete")
    assert code == 0 and "3 of 3 account(s) can serve" in out and "answered" in out
