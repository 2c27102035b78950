"""The relay's cost against the raw upstream: `python -m bench.run` (see bench/README.md).

Starts the fake claude.ai and the relay as separate processes on loopback, drives both with an
aiohttp load generator, prints a comparison table with pass/fail lines and rewrites
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from relay.demo import org_for

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
ACCOUNTS = [f"sk-ant-sid01-bench{'b' * 86}-bnc{n:03d}AA" for n in range(1, 5)]
MODEL = "claude-sonnet-4-6"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass
class Sample:
    ttfb: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    frames: int = 0
    nbytes: int = 0
    errors: int = 0


class Bench:
    def __init__(self, fake_url: str, relay_url: str) -> None:
        self.fake_url = fake_url
        self.relay_url = relay_url
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=600))
        self._turn = 0

    async def close(self) -> None:
        await self.http.close()

    async def configure(self, **values: Any) -> None:
        async with self.http.post(f"{self.fake_url}/_fake/config", json=values) as r:
            r.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.fake_url}/_fake/stats") as r:
            return dict(await r.json())

    async def relay_stream(self, sample: Sample, model: str = MODEL) -> None:
        body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "benchmark"}]}
        headers = {"Authorization": f"Bearer {API_KEY}"}
        await self._stream(
            f"{self.relay_url}/v1/chat/completions", body, headers, b'"delta":{"content":', b"data: [DONE]", sample
        )

    async def direct_stream(self, sample: Sample) -> None:
        """The same answer straight from the fake, one call, as the relay makes it."""
        key = ACCOUNTS[self._turn % len(ACCOUNTS)]
        self._turn += 1
        org, conv = org_for(key), str(uuid.uuid4())
        body = {
            "prompt": "Human: benchmark",
            "model": MODEL,
            "rendering_mode": "messages",
            "create_conversation_params": {"uuid": conv, "name": "", "model": MODEL},
        }
        url = f"{self.fake_url}/api/organizations/{org}/chat_conversations/{conv}/completion"
        headers = {"Cookie": f"sessionKey={key}", "Accept": "text/event-stream"}
        await self._stream(url, body, headers, b'"text_delta"', b"message_stop", sample)

    async def _stream(
        self, url: str, body: dict[str, Any], headers: dict[str, str], first: bytes, last: bytes, sample: Sample
    ) -> None:
        started = time.perf_counter()
        ttfb = None
        tail = b""
        try:
            async with self.http.post(url, json=body, headers=headers) as r:
                if r.status != 200:
                    sample.errors += 1
                    await r.read()
                    return
                async for chunk in r.content.iter_any():
                    if ttfb is None and first in tail + chunk:
                        ttfb = time.perf_counter() - started
                    sample.frames += chunk.count(b"\n\n")
                    sample.nbytes += len(chunk)
                    tail = (tail + chunk)[-64:]
        except aiohttp.ClientError:
            sample.errors += 1
            return
        if ttfb is None or last not in tail:
            sample.errors += 1
            return
        sample.ttfb.append(ttfb)
        sample.total.append(time.perf_counter() - started)


async def _run(concurrency: int, per_worker: int, one: Callable[[Sample], Awaitable[None]]) -> tuple[Sample, float]:
    sample = Sample()

    async def worker() -> None:
        for _ in range(per_worker):
            await one(sample)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sample, time.perf_counter() - started


def _ms(v: float) -> str:
    return f"{v * 1000:.2f}"


async def latency(b: Bench, rows: list[str], checks: list[tuple[str, bool]], quick: bool) -> None:
    rows.append("\n### 1. Time to first byte and total time (20-chunk answers, ms)\n")
    rows.append(
        "Paced: chunks 10 ms apart, as claude.ai streams; the relay is not saturated. Saturated: no delay,\n"
        "every worker sends its next request at once, so time to first byte is mostly queueing behind the\n"
        "relay's per-request CPU cost (see section 2 for raw throughput).\n"
    )
    rows.append("| streams | answers | path | ttfb p50 | ttfb p95 | ttfb p99 | total p50 | total p95 | total p99 | errors |")
    rows.append("|---|---|---|---|---|---|---|---|---|---|")
    runs = (
        (1, "paced", 0.01, 40 if quick else 200, 0.002),
        (50, "paced", 0.01, 3 if quick else 10, 0.010),
        (50, "saturated", 0.0, 4 if quick else 20, None),
    )
    for conc, label, delay, n, target in runs:
        await b.configure(latency=0, chunk_delay=delay, chunks=20)
        res = {}
        for name, fn in (("direct", b.direct_stream), ("relay", b.relay_stream)):
            await _run(conc, 1, fn)  # warm connections
            sample, _ = await _run(conc, n, fn)
            res[name] = sample
            t, tt = sample.ttfb, sample.total
            rows.append(
                f"| {conc} | {label} | {name} | {_ms(_pct(t, 50))} | {_ms(_pct(t, 95))} | {_ms(_pct(t, 99))} | "
                f"{_ms(_pct(tt, 50))} | {_ms(_pct(tt, 95))} | {_ms(_pct(tt, 99))} | {sample.errors} |"
            )
        added = _pct(res["relay"].ttfb, 50) - _pct(res["direct"].ttfb, 50)
        rows.append(f"| {conc} | {label} | **added by relay** | **{_ms(added)}** | | | | | | |")
        if target is not None:
            checks.append(
                (
                    f"added p50 time to first byte at {conc} {label} stream(s) = {_ms(added)} ms <= {target * 1000:.0f} ms",
                    added <= target,
                )
            )


async def throughput(b: Bench, rows: list[str], checks: list[tuple[str, bool]], quick: bool) -> None:
    chunks = 500 if quick else 2000
    await asyncio.sleep(2)  # let earlier phases' background deletes finish
    await b.configure(latency=0, chunk_delay=0, chunks=chunks)
    rows.append(f"\n### 2. Streaming throughput ({chunks}-chunk answers)\n")
    rows.append("Answer chunks delivered per second (the relay may join chunks that arrive in one network read")
    rows.append("into one client frame, so frames and bytes are not comparable).\n")
    rows.append("| streams | direct chunks/s | relay chunks/s | relay/direct | errors |")
    rows.append("|---|---|---|---|---|")
    for conc, per in ((1, 3), (50, 1), (500, 1)):
        out = {}
        for name, fn in (("direct", b.direct_stream), ("relay", b.relay_stream)):
            sample, elapsed = await _run(conc, per, fn)
            out[name] = (len(sample.total) * chunks / elapsed, sample.errors)
        ratio = out["relay"][0] / out["direct"][0]
        rows.append(
            f"| {conc} | {out['direct'][0]:,.0f} | {out['relay'][0]:,.0f} | {ratio:.2f} | {out['direct'][1] + out['relay'][1]} |"
        )
        if conc == 50:
            checks.append((f"relay throughput at 50 streams = {ratio:.2f} x direct >= 0.8", ratio >= 0.8))


async def open_streams(b: Bench, pid: int, rows: list[str], checks: list[tuple[str, bool]], quick: bool) -> None:
    n = 300 if quick else 1000
    await b.configure(latency=0, chunk_delay=0.05, chunks=100)
    peak = before = _rss_mb(pid)
    done = asyncio.Event()

    async def sampler() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mb(pid))
            await asyncio.sleep(0.05)

    watch = asyncio.create_task(sampler())
    sample, elapsed = await _run(n, 1, b.relay_stream)
    done.set()
    await watch
    rows.append(f"\n### 3. {n} concurrent open streams (100 chunks, 50 ms apart)\n")
    rows.append("| streams | completed | errors | relay peak RSS (MB) | wall time (s) |")
    rows.append("|---|---|---|---|---|")
    rows.append(f"| {n} | {len(sample.total)} | {sample.errors} | {peak:.0f} | {elapsed:.1f} |")
    rows.append(f"\nThe relay's RSS before these streams was {before:.0f} MB.")
    checks.append(
        (f"{n} concurrent streams: {sample.errors} errors, relay RSS {peak:.0f} MB <= 140 MB", sample.errors == 0 and peak <= 140)
    )


async def connections(b: Bench, rows: list[str], checks: list[tuple[str, bool]]) -> None:
    await asyncio.sleep(1)  # let earlier phases' background deletes finish
    await b.configure(latency=0, chunk_delay=0, chunks=20, reset=True)
    sample, _ = await _run(1, 100, b.relay_stream)
    await asyncio.sleep(0.5)  # let background deletes land
    stats = await b.stats()
    calls = stats["calls"]
    per_account = stats["connections"] / len(ACCOUNTS)
    total_calls = sum(calls.values())
    rows.append("\n### 4. Upstream connections and calls (100 sequential requests)\n")
    rows.append("| new upstream connections | per account | calls per request | before first token | calls seen |")
    rows.append("|---|---|---|---|---|")
    rows.append(
        f"| {stats['connections']} | {per_account:.2f} | {total_calls / 100:.2f} | "
        f"{calls.get('completion', 0) / 100:.2f} | {json.dumps(calls, sort_keys=True)} |"
    )
    checks.append(
        (f"{per_account:.2f} new upstream connections per account per 100 requests <= 1", per_account <= 1 and sample.errors == 0)
    )


async def round_trips(b: Bench, rows: list[str], checks: list[tuple[str, bool]], quick: bool) -> None:
    """Time to first token divided by one upstream round trip: a completion call made straight to the
    fake with the same latency, which includes the fake's own work, so only the relay's calls count."""
    rtt = 0.030
    n = 10 if quick else 30
    await b.configure(latency=rtt, chunk_delay=0, chunks=20, inline_create=True)
    one = Sample()
    for _ in range(n):
        await b.direct_stream(one)
    trip = statistics.median(one.ttfb)
    rows.append(
        f"\n### 5. Time to first token in upstream round trips ({rtt * 1000:.0f} ms simulated latency per call, one stream)\n"
    )
    rows.append(f"One round trip (a completion call straight to the fake) measured {trip * 1000:.1f} ms to its first token.\n")
    rows.append("| path | plain | thinking | plain (ms) | thinking (ms) |")
    rows.append("|---|---|---|---|---|")
    for label, inline in (("relay (chat created by the completion call)", True), ("create + completion (fallback path)", False)):
        await b.configure(latency=rtt, chunk_delay=0, chunks=20, inline_create=inline)
        medians = []
        for model in (MODEL, MODEL + "-think"):
            sample = Sample()
            for _ in range(n):
                await b.relay_stream(sample, model)
            medians.append(statistics.median(sample.ttfb))
        trips = [m / trip for m in medians]
        rows.append(f"| {label} | {trips[0]:.2f} | {trips[1]:.2f} | {medians[0] * 1000:.1f} | {medians[1] * 1000:.1f} |")
        if inline:
            checks.append(
                (
                    f"median time to first token = {trips[0]:.2f} (plain), {trips[1]:.2f} (thinking) round trips <= 1.2",
                    max(trips) <= 1.2,
                )
            )
    await b.configure(latency=0, inline_create=True)


async def cpu(b: Bench, pids: tuple[int, int], rows: list[str], checks: list[tuple[str, bool]], quick: bool) -> None:
    """CPU the relay spends per relayed event against what the fake spends producing the same
    events: the fake is a plain aiohttp SSE writer, so this is the relay's cost per event compared
    with the least a server can spend. Twice: the fake writing frames in batches, and writing every
    event (and every ping) in its own write, as claude.ai flushes them, which makes the relay read
    many small pieces."""
    relay_pid, fake_pid = pids
    words, rounds = 3000, 3 if quick else 5
    await asyncio.sleep(2)  # let earlier phases' background deletes finish
    rows.append(f"\n### 6. CPU per relayed event ({words}-chunk answers, median of {rounds} rounds)\n")
    rows.append("Events are the answer's text deltas as claude.ai sends them; the relay may join deltas that")
    rows.append("arrive in one network read, or while they come fast within UPSTREAM_READ_INTERVAL, into one")
    rows.append("client frame.\n")
    rows.append(
        "| upstream writes | streams | events per round | relay CPU ms / 1k events | fake CPU ms / 1k events | relay / fake |"
    )
    rows.append("|---|---|---|---|---|---|")
    for label, per_event in (("batched", False), ("one per event", True)):
        await b.configure(latency=0, chunk_delay=0, chunks=words, per_event=per_event)
        for conc, per in ((1, 2 if quick else 5), (40, 1)):
            ratios, relay_ms, fake_ms, events = [], [], [], 0
            for _ in range(rounds):
                before = _cpu_seconds(relay_pid), _cpu_seconds(fake_pid)
                sample, _ = await _run(conc, per, b.relay_stream)
                spent = _cpu_seconds(relay_pid) - before[0], _cpu_seconds(fake_pid) - before[1]
                events = len(sample.total) * words
                relay_ms.append(spent[0] * 1e6 / events)
                fake_ms.append(spent[1] * 1e6 / events)
                ratios.append(spent[0] / spent[1] if spent[1] else float("inf"))
            ratio = statistics.median(ratios)
            per_k = statistics.median(relay_ms), statistics.median(fake_ms)
            rows.append(f"| {label} | {conc} | {events:,} | {per_k[0]:.1f} | {per_k[1]:.1f} | {ratio:.2f} |")
            if conc == 40:
                checks.append((f"relay CPU at 40 streams = {ratio:.2f} x the fake's ({label} writes) <= 0.7", ratio <= 0.7))
    await b.configure(per_event=False)


async def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if proc.poll() is not None:
                raise SystemExit(f"process for {url} exited with {proc.returncode}")
            try:
                async with http.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def _start_relay(fake_url: str, port: int, event_loop: str, read_interval: str | None) -> subprocess.Popen[bytes]:
    """The relay as users run it, four accounts on the fake; only the bench's own settings passed."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG", "PYTHONPATH")},
        "SESSIONS": ",".join(f"{k}:{org_for(k)}" for k in ACCOUNTS),
        "APIKEY": API_KEY,
        "CLAUDE_BASE_URL": fake_url,
        "PORT": str(port),
        "UPSTREAM_MAX_CONNECTIONS": "400",
        "EVENT_LOOP": event_loop,
        **({"UPSTREAM_READ_INTERVAL": read_interval} if read_interval is not None else {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "relay", "--env-file", "/nonexistent"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )


def _report(rows: list[str], checks: list[tuple[str, bool]], event_loop: str) -> str:
    processor = platform.processor() or platform.machine()
    loop = event_loop if event_loop != "auto" else ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
    machine = f"{os.cpu_count()} cores, {processor}, Python {platform.python_version()}, {platform.system()}, relay on {loop}"
    report = [
        "# Benchmark results",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine}; fake upstream, relay and load",
        "generator are three processes sharing the machine. Regenerate with `python -m bench.run`.",
        *rows,
        "\n### Targets\n",
        *[f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks],
        "",
    ]
    return "\n".join(report)


async def main(quick: bool, only: list[int], event_loop: str, read_interval: str | None) -> int:
    fake_port, relay_port = _free_port(), _free_port()
    fake_url, relay_url = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{relay_port}"
    fake = subprocess.Popen([sys.executable, "-m", "relay.demo", "--port", str(fake_port)], cwd=ROOT)
    relay = _start_relay(fake_url, relay_port, event_loop, read_interval)
    rows: list[str] = []
    checks: list[tuple[str, bool]] = []
    try:
        await _wait_healthy(f"{fake_url}/_fake/stats", fake)
        await _wait_healthy(f"{relay_url}/health", relay)
        b = Bench(fake_url, relay_url)
        try:
            sections: dict[int, list[str]] = {n: [] for n in range(1, 7)}
            # Connections are counted while the pool is quiet, and memory before the throughput
            # phase's bursts have grown the heap.
            phases: dict[int, Callable[[], Awaitable[None]]] = {
                1: lambda: latency(b, sections[1], checks, quick),
                4: lambda: connections(b, sections[4], checks),
                3: lambda: open_streams(b, relay.pid, sections[3], checks, quick),
                2: lambda: throughput(b, sections[2], checks, quick),
                5: lambda: round_trips(b, sections[5], checks, quick),
                6: lambda: cpu(b, (relay.pid, fake.pid), sections[6], checks, quick),
            }
            for number, phase in phases.items():
                if not only or number in only:
                    await phase()
            rows = [row for n in sorted(sections) for row in sections[n]]
        finally:
            await b.close()
    finally:
        for proc in (relay, fake):
            proc.terminate()
            proc.wait(timeout=30)
    text = _report(rows, checks, event_loop)
    print(text)
    if not quick and not only:
        (ROOT / "bench" / "RESULTS.md").write_text(text)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--quick", action="store_true", help="fewer requests; does not rewrite RESULTS.md")
    parser.add_argument("--only", type=int, action="append", default=[], help="run only this section (repeatable)")
    parser.add_argument("--event-loop", default="auto", choices=["auto", "uvloop", "asyncio"], help="the relay's EVENT_LOOP")
    parser.add_argument("--read-interval", help="the relay's UPSTREAM_READ_INTERVAL (0: every read at once)")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.quick, args.only, args.event_loop, args.read_interval)))
