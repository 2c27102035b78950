"""Agent sessions through the relay: N turns of a Claude-Code-like client over the Anthropic API,
each adding one tool call and a 4 KB tool result, with conversation sessions and with a fresh chat
per request. Writes bench/SESSIONS.md.

    python -m bench.sessions [--turns 20 --turns 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from relay.config import Settings
from relay.demo import FakeClaude
from relay.server.app import create_app
from relay.server.serve import start_serving

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-ant-sid01-bench" + "x" * 90 + "-bench1AA"
RESULT = "x" * 4096
TOOL = {
    "name": "read_file",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
}


def agent_model(turns: int) -> Any:
    def reply(model: str, conversation: str) -> str:
        done = conversation.count("[tool result (")
        if done >= turns:
            return f"I read {done} files."
        call = {"name": "read_file", "arguments": {"path": f"f{done}.txt"}}
        return f"Reading.\n<tool_call>{json.dumps(call)}</tool_call>"

    return reply


@dataclass
class Session:
    ttfb_ms: list[float] = field(default_factory=list)
    upstream_bytes: list[int] = field(default_factory=list)
    new_bytes: list[int] = field(default_factory=list)
    chats: int = 0


async def _turn(http: aiohttp.ClientSession, url: str, messages: list[dict[str, Any]]) -> tuple[float, list[dict[str, Any]]]:
    """One streamed request; (time to first byte in ms, the answer's content blocks)."""
    body = {"model": "claude-sonnet-4-6", "max_tokens": 1000, "messages": messages, "tools": [TOOL], "stream": True}
    started = time.perf_counter()
    blocks: list[dict[str, Any]] = []
    async with http.post(url + "/v1/messages", json=body, headers={"x-api-key": "bench", "anthropic-version": "2023-06-01"}) as r:
        first = None
        async for line in r.content:
            first = first or time.perf_counter()
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                if event["type"] == "content_block_start":
                    blocks.append(event["content_block"])
                elif event["type"] == "content_block_delta" and event["delta"]["type"] == "text_delta":
                    blocks[-1]["text"] += event["delta"]["text"]
                elif event["type"] == "content_block_delta" and event["delta"]["type"] == "input_json_delta":
                    blocks[-1]["partial"] = blocks[-1].get("partial", "") + event["delta"]["partial_json"]
    for block in blocks:
        if block["type"] == "tool_use":
            block["input"] = json.loads(block.pop("partial", "") or "{}")
    return ((first or time.perf_counter()) - started) * 1000, blocks


async def run_session(turns: int, conversations: str) -> Session:
    fake = FakeClaude(reply=agent_model(turns))
    runner = web.AppRunner(fake.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        sessions=KEY,
        apikey="bench",
        claude_base_url=f"http://127.0.0.1:{port}",
        conversations=conversations,
        log_level="WARNING",
    )
    served = await start_serving(create_app(settings), "127.0.0.1", 0, header_timeout=15, shutdown_timeout=5)
    result = Session()
    try:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Read the files."}]
        async with aiohttp.ClientSession() as http:
            for _ in range(turns + 1):
                ttfb, blocks = await _turn(http, f"http://127.0.0.1:{served.port}", messages)
                call = fake.calls_named("completion")[-1]
                result.ttfb_ms.append(ttfb)
                result.upstream_bytes.append(len(json.dumps(call.body)))
                messages.append({"role": "assistant", "content": blocks})
                calls = [b for b in blocks if b["type"] == "tool_use"]
                if not calls:
                    break
                results = [{"type": "tool_result", "tool_use_id": c["id"], "content": RESULT} for c in calls]
                result.new_bytes.append(len(json.dumps(results)) + len(json.dumps(blocks)))
                messages.append({"role": "user", "content": results})
        result.chats = len({c.path.split("/")[-2] for c in fake.calls_named("completion")})
    finally:
        await served.close()
        await runner.cleanup()
    return result


HEADER = (
    "| turns | conversations | chats | bytes turn 2 | bytes last turn | new content last turn | last/new"
    " | bytes whole session | ttfb p50 ms | ttfb last ms |"
)


def _row(turns: int, mode: str, s: Session) -> str:
    last, new = s.upstream_bytes[turns - 1], s.new_bytes[turns - 2]
    return (
        f"| {turns} | {mode} | {s.chats} | {s.upstream_bytes[1]:,} | {last:,} | {new:,} | {last / new:.2f} | "
        f"{sum(s.upstream_bytes):,} | {statistics.median(s.ttfb_ms):.1f} | {s.ttfb_ms[turns - 1]:.1f} |"
    )


async def main(turn_counts: list[int]) -> None:
    rows = []
    for turns in turn_counts:
        for mode in ("sessions", "fresh"):
            session = await run_session(turns, mode)
            rows.append(_row(turns, mode, session))
            print(rows[-1], flush=True)
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    text = "\n".join(
        [
            "# Agent sessions",
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} ({machine}); fake upstream and relay in one",
            "process. Each turn adds one tool call and a 4 KB tool result. `python -m bench.sessions` regenerates it.",
            "",
            HEADER,
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    (ROOT / "bench" / "SESSIONS.md").write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.sessions")
    parser.add_argument("--turns", type=int, action="append", default=[], help="turns per session (repeatable)")
    args = parser.parse_args()
    asyncio.run(main(args.turns or [20, 100]))
