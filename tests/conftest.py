"""Fixtures: the fake claude.ai and the relay, both real aiohttp servers on loopback sockets."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.config import SessionSpec, Settings
from relay.demo import FakeClaude
from relay.pool.pool import AccountPool
from relay.server.app import create_app
from relay.server.keys import pool_key

API_KEY = "test-api-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ADMIN_KEY = "admin-key-0123456789"
# Encrypts what STATE_FILE and Redis keep (tests that add accounts keep them there).
STATE_SECRET = "state-secret-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MODEL = "claude-sonnet-4-6"
HI = [{"role": "user", "content": "hi"}]


def session_key(n: int) -> str:
    """A well-formed, distinct test cookie."""
    return f"sk-ant-sid01-test{n:02d}{'a' * 86}-abc{n:03d}AA"


def make_settings(base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "sessions": ",".join(session_key(n) for n in range(1, 4)),
        "apikey": API_KEY,
        "claude_base_url": base_url,
        "log_level": "DEBUG",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Relay:
    server: TestServer
    app: web.Application
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def pool(self) -> AccountPool:
        return self.app[pool_key]

    def openai(self, prefix: str = "/v1", api_key: str = API_KEY) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=self.url + prefix, api_key=api_key, max_retries=0, timeout=20)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeClaude:
    fake = FakeClaude()
    fake.server = await aiohttp_server(fake.app)  # type: ignore[attr-defined]
    return fake


def fake_url(fake: FakeClaude) -> str:
    return str(fake.server.make_url("")).rstrip("/")  # type: ignore[attr-defined]


RelayFactory = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def make_relay(aiohttp_server: Any, fake: FakeClaude) -> AsyncIterator[RelayFactory]:
    made: list[Relay] = []

    async def factory(
        reload: Callable[[], tuple[SessionSpec, ...]] | None = None, clock: Callable[[], float] = time.time, **overrides: Any
    ) -> Relay:
        settings = make_settings(fake_url(fake), **overrides)
        app = create_app(settings, reload_sessions=reload or (lambda: settings.sessions), clock=clock)
        relay = Relay(await aiohttp_server(app), app)
        made.append(relay)
        return relay

    yield factory
    for relay in made:
        await relay.close()


@pytest.fixture
async def relay(make_relay: RelayFactory) -> Relay:
    return await make_relay()


def continues(fake: FakeClaude, n: int = -1) -> bool:
    """Whether completion `n` continued the chat of the one before it: the same chat, as a child
    of that one's answer (so only its new turns were sent)."""
    calls = fake.calls_named("completion")
    this, before = calls[n], calls[n - 1]
    parent = before.body["turn_message_uuids"]["assistant_message_uuid"]
    return bool(this.path == before.path and this.body["parent_message_uuid"] == parent)


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    """Wait until `check()` holds (a check may be async, e.g. a request to a relay); fails the
    test after `timeout` seconds instead of hanging."""
    async with asyncio.timeout(timeout):
        while not ((await held) if inspect.isawaitable(held := check()) else held):
            await asyncio.sleep(0.01)


@dataclass
class Clock:
    """A clock the test moves by hand, for the pool's cooldowns."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(http: aiohttp.ClientSession, port: int, timeout: float = 60) -> None:
    """Poll a relay started as a process until /health answers."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


def relay_process(fake: FakeClaude, **settings: str) -> tuple[subprocess.Popen[bytes], int]:
    """relay in a process of its own (on uvloop, as it ships), one account on `fake`: one a test
    can kill -9, or whose held event loop cannot hold the test's clock too. `settings` are more
    environment variables."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields},
        "SESSIONS": session_key(1),
        "APIKEY": API_KEY,
        "CLAUDE_BASE_URL": fake_url(fake),
        "PORT": str(port),
        **settings,
    }
    proc = subprocess.Popen([sys.executable, "-m", "relay", "--env-file", "/nonexistent"], env=env, stderr=subprocess.DEVNULL)
    return proc, port


REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(
    not REDIS and not os.environ.get("CI"), reason="redis-server is not installed (Debian package redis-server)"
)


class RedisServer:
    """A throwaway redis-server on a free loopback port."""

    def __init__(self, tmp: Path) -> None:
        assert REDIS, "redis-server must be installed"
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            REDIS,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.tmp),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis that .ci/run started, or one of our own."""
    if url := os.environ.get("RELAY_TEST_REDIS_URL"):
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


async def admin_call(
    relay: Relay, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One call to the relay's JSON routes, with the admin key unless told otherwise."""
    async with aiohttp.ClientSession() as http:
        async with http.request(method, relay.url + path, json=body, headers=headers or ADMIN) as r:
            return r.status, await r.json()


class LoopbackProxy:
    """A plain HTTP forward proxy on loopback that notes each request line it relays."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        line = head.split(b"\r\n", 1)[0].decode()
        self.seen.append(line)
        target = urlsplit(line.split(" ")[1])
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        up_writer.write(head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, note: bool) -> None:
            try:
                while data := await src.read(65536):
                    if note and data.startswith((b"GET ", b"POST ", b"PUT ", b"DELETE ")):
                        self.seen.append(data.split(b"\r\n", 1)[0].decode())
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


@pytest.fixture
async def proxy() -> AsyncIterator[LoopbackProxy]:
    server = LoopbackProxy()
    await server.start()
    yield server
    await server.close()
