"""Property-based fuzzing of every client route: generated and mutated bodies and headers.

Invariants for every request: the status is below 500, an error answer is JSON in the route's
error shape, a refused request never reached claude.ai, and the relay still serves afterwards.
`HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py` runs many more cases by hand.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import gzip
import http.client
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.demo import FakeClaude
from relay.server.app import create_app
from relay.server.serve import start_serving
from tests.conftest import API_KEY, MODEL, make_settings
from tests.test_inputs import tiny_png

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

PNG = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
BASES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": PNG}}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": [TOOL],
        "tool_choice": "auto",
        "stop": ["END"],
        "stream": False,
    },
    "/v1/messages": {
        "model": MODEL,
        "max_tokens": 50,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG.split(",")[1]}},
                ],
            },
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
        ],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stream": False,
    },
    "/v1/messages/count_tokens": {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "f", "input_schema": {}}],
    },
    "/v1/responses": {
        "model": MODEL,
        "instructions": "Be brief.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": PNG}],
            },
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
        "tools": [
            {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
            {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "f"}]},
        ],
        "reasoning": {"effort": "low"},
        "stream": False,
    },
}

json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
json_value = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12
)


def _slots(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON document: the path to each value."""
    yield path
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _slots(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _slots(value, (*path, i))


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """A valid body with one to three places replaced, deleted or added to."""
    body: Any = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_slots(body))))
        if not path:
            body = draw(json_value) if draw(st.booleans()) else body
            continue
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[key] = draw(json_value)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=8))] = draw(json_value)
        elif isinstance(parent[key], list):
            parent[key].append(draw(json_value))
    return body


@dataclass
class Served:
    port: int
    fake: FakeClaude

    def completions(self) -> int:
        return len([c for c in list(self.fake.calls) if c.name == "completion"])


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """The fake claude.ai and the relay on their own event loop, for a synchronous fuzzer."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        fake = FakeClaude()
        fake_runner = web.AppRunner(fake.app)
        await fake_runner.setup()
        await web.TCPSite(fake_runner, "127.0.0.1", 0).start()
        fake_port = fake_runner.addresses[0][1]
        # A short body limit: aiohttp can leave a request whose body failed to decode waiting for
        # more, and that limit is what ends the wait (408).
        app = create_app(
            make_settings(f"http://127.0.0.1:{fake_port}", log_level="WARNING", chat_delete=False, request_body_timeout=2)
        )
        serving = await start_serving(app, "127.0.0.1", 0, header_timeout=15, shutdown_timeout=5)  # as `relay` serves
        box["served"] = Served(serving.port, fake)
        box["stop"] = stop = asyncio.Event()
        box["loop"] = asyncio.get_running_loop()
        ready.set()
        await stop.wait()
        await serving.close()
        await fake_runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield box["served"]
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(30)


def _request(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Content-Type") or ""
    finally:
        conn.close()


def _check(served: Served, path: str, body: bytes | None, headers: dict[str, str], method: str = "POST") -> int:
    before = served.completions()
    status, raw, ctype = _request(served.port, method, path, body, {"Authorization": f"Bearer {API_KEY}", **headers})
    assert status < 500, (status, raw[:300])
    if status >= 400:
        assert "application/json" in ctype, (status, ctype, raw[:200])
        doc = json.loads(raw)
        error = doc["error"]
        assert isinstance(error["message"], str) and isinstance(error["type"], str)
        if status != 429:
            assert served.completions() == before, f"a refused request ({status}) reached claude.ai"
    return status


def _still_serves(served: Served) -> None:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "still there?"}]}).encode()
    assert _check(served, "/v1/chat/completions", body, {"Content-Type": "application/json"}) == 200


@pytest.mark.parametrize("path", list(BASES))
def test_mutated_bodies_never_break_the_relay(served: Served, path: str) -> None:
    @given(body=mutated(BASES[path]))
    def check(body: Any) -> None:
        _check(served, path, json.dumps(body).encode(), {"Content-Type": "application/json"})

    check()
    _still_serves(served)


@given(
    path=st.sampled_from([*BASES, "/v1/accounts/reload", "/v1/models/x", "/hf/v1/responses", "/v1/nothing"]),
    raw=st.binary(max_size=200) | json_value.map(lambda v: json.dumps(v).encode()),
    request_id=st.text(max_size=80),
    encoding=st.sampled_from([None, "gzip", "deflate", "br", "identity", "x-unknown"]),
    compress=st.booleans(),
)
def test_arbitrary_bytes_and_headers(
    served: Served, path: str, raw: bytes, request_id: str, encoding: str | None, compress: bool
) -> None:
    headers = {"Content-Type": "application/json", "x-request-id": request_id.encode("utf-8", "ignore").decode("latin-1")}
    if encoding:
        headers["Content-Encoding"] = encoding
        raw = gzip.compress(raw) if compress and encoding == "gzip" else raw
    headers = {k: v for k, v in headers.items() if "\r" not in v and "\n" not in v}
    _check(served, path, raw, headers)


@given(key=st.binary(min_size=1, max_size=60), via=st.sampled_from(["Authorization", "x-api-key"]))
def test_hostile_keys_are_refused_cleanly(served: Served, key: bytes, via: str) -> None:
    value = (b"Bearer " + key if via == "Authorization" else key).decode("latin-1")
    if any(c in value for c in "\r\n\x00"):
        return
    before = served.completions()
    status, raw, _ = _request(served.port, "GET", "/v1/accounts", None, {via: value})
    assert status in (400, 401), (status, raw[:200])  # 400: bytes HTTP does not allow in a header
    assert json.loads(raw)["error"]["type"] in ("authentication_error", "invalid_request_error")
    assert served.completions() == before


def test_the_relay_serves_after_the_fuzzing(served: Served) -> None:
    _still_serves(served)
