"""A fake claude.ai web API: a real aiohttp app that answers like the upstream and records every call.

It serves `relay --demo`, the test suite and the benchmark. Each account (sessionKey) can be
scripted to fail the way real accounts do: rate limited, invalid, banned, region or Cloudflare
blocked, overloaded, dropping the stream, or slow.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import BodyPartReader, web

# Frames per write when streaming without delay.
FAST_BATCH = 32
CLOUDFLARE_PAGE = b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>challenge</body></html>"


@dataclass
class Behavior:
    """How one account answers. `mode` is one of MODES; text/thinking override the default answer."""

    mode: str = "ok"
    text: str | None = None
    thinking: str | None = None
    resets_at: float | None = None  # for rate_limited and limit_after
    drop_after: int = 3  # for drop: text chunks sent before the connection is cut
    chunk_delay: float | None = None
    first_delay: float = 0.0  # silence before the first content event
    accept_delay: float = 0.0  # time the completion takes before it creates the chat and answers
    usage: dict[str, float] | None = None  # starting quota use per window ("5h", "7d"), 0..1
    models: frozenset[str] | None = None  # the models the account's plan has (None: all)
    refuse_fields: frozenset[str] = frozenset()  # completion fields this account's claude.ai does not take
    thinking_form: str = "full"  # how thinking streams: full, summary (summaries only) or both
    interleave: bool = False  # thinking, text, thinking, text instead of thinking then text
    search: str | None = None  # a web search claude.ai runs when asked (tool_use + tool_result blocks, a citation)
    # What each answer adds to the 5-hour window (a fifth of that to the 7-day one); small, so that
    # benchmarks with thousands of answers do not use an account up.
    usage_step: float = 0.0001
    stop_reason: str = "end_turn"
    tool_block: tuple[str, dict[str, Any]] | None = None  # an upstream tool_use block (e.g. artifacts) after the text
    fail_calls: frozenset[str] = frozenset({"completion"})  # which calls the failure modes hit


MODES = (
    "ok",
    "rate_limited",
    "invalid",
    "banned",
    "region",
    "cloudflare_302",
    "cloudflare_html",
    "overloaded",
    "server_error",
    "drop",
    "limit_after",
    "no_chat_org",
    "orgs_error_object",
    "hang",  # accepts the completion and never answers, not even headers
    "stall",  # starts the answer, then goes silent for good
    "reset",  # resets the connection before answering
    "garbage",  # answers 200 with an event stream of junk, then closes
    "unavailable",  # 503 with a plain-text body
)
# How often a silent answer ("hang", "stall") checks whether its caller has gone.
SILENCE_POLL = 0.05


@dataclass
class Call:
    """One request the fake received."""

    name: str
    method: str
    path: str
    session_key: str
    body: Any
    headers: dict[str, str]
    files: list[tuple[str, str, bytes]] = field(default_factory=list)


def org_for(key: str) -> str:
    """A stable organization id per sessionKey."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "fake-claude/" + key))


class FakeClaude:
    """The fake upstream. `app` is the aiohttp application; scripts and logs are plain attributes."""

    def __init__(
        self,
        *,
        chunk_delay: float = 0.0,
        latency: float = 0.0,
        chunks: int | None = None,
        reply: Callable[[str, str], str] | None = None,
    ) -> None:
        self.behaviors: dict[str, Behavior] = {}
        self.calls: list[Call] = []
        self.chunk_delay = chunk_delay
        self.latency = latency  # added to every call, like a network round trip
        self.chunks = chunks  # answer length in chunks for generated text (benchmarks)
        self.reply = reply or demo_reply
        self.conversations: dict[str, dict[str, Any]] = {}  # conv uuid -> {org, settings, key}
        self.deleted: list[str] = []
        self.uploads: dict[str, tuple[str, str, bytes]] = {}
        self.peers: set[Any] = set()  # client (host, port) pairs: one per upstream connection
        self.new_connections = 0  # connections opened since the last reset
        self.uploading = 0
        self.max_parallel_uploads = 0
        self.inline_create = True  # honour create_conversation_params like the 2026 web app
        self.inline_refusal = 404  # the status for an unknown chat when inline creation is off
        self.open_streams = 0
        # Quota windows per sessionKey, growing with every answer; they reset at fixed times.
        self.windows: dict[str, dict[str, float]] = {}
        now = time.time()
        self.window_resets = {"5h": math.ceil(now + 5 * 3600), "7d": math.ceil(now + 7 * 86400)}
        self.disconnects = 0
        self.stream_closed = asyncio.Event()
        self.app = self._build()

    def script(self, key: str, mode: str = "ok", **kw: Any) -> Behavior:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode}")
        behavior = Behavior(mode=mode, **kw)
        self.behaviors[key] = behavior
        return behavior

    def _windows(self, key: str, behavior: Behavior) -> dict[str, float]:
        if key not in self.windows:
            self.windows[key] = {"5h": 0.0, "7d": 0.0, **(behavior.usage or {})}
        return self.windows[key]

    def _window_report(self, key: str, behavior: Behavior) -> dict[str, Any]:
        """The `windows` of a message_limit event, after this answer's use."""
        used = self._windows(key, behavior)
        used["5h"] = min(1.0, used["5h"] + behavior.usage_step)
        used["7d"] = min(1.0, used["7d"] + behavior.usage_step / 5)
        return {
            name: {
                "status": "within_limit" if u < 1.0 else "exceeded_limit",
                "resets_at": self.window_resets[name],
                "utilization": round(u, 4),
            }
            for name, u in used.items()
        }

    def calls_named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    # -- plumbing --------------------------------------------------------------------------------

    def _build(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/api/organizations", self._orgs)
        app.router.add_post("/api/organizations/{org}/chat_conversations", self._create)
        app.router.add_put("/api/organizations/{org}/chat_conversations/{conv}", self._settings)
        app.router.add_delete("/api/organizations/{org}/chat_conversations/{conv}", self._delete)
        app.router.add_post("/api/organizations/{org}/chat_conversations/{conv}/completion", self._completion)
        app.router.add_post("/api/{org}/upload", self._upload)
        app.router.add_get("/api/organizations/{org}/usage", self._usage)
        app.router.add_get("/_fake/stats", self._stats)
        app.router.add_post("/_fake/config", self._config)
        return app

    @staticmethod
    def _key(request: web.Request) -> str:
        return request.cookies.get("sessionKey", "")

    async def _record(self, name: str, request: web.Request, body: Any = None, files: list[Any] | None = None) -> Behavior:
        key = self._key(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer not in self.peers:
            self.peers.add(peer)
            self.new_connections += 1
        self.calls.append(Call(name, request.method, request.path, key, body, dict(request.headers), files or []))
        if self.latency:
            await asyncio.sleep(self.latency)
        return self.behaviors.get(key, Behavior())

    @staticmethod
    async def _json(request: web.Request) -> Any:
        raw = await request.read()
        return json.loads(raw) if raw else None

    def _failure(self, behavior: Behavior, call: str) -> web.StreamResponse | None:
        """The scripted error answer for this call, if any."""
        if call not in behavior.fail_calls and not (behavior.mode == "invalid" and call == "orgs"):
            return None
        mode = behavior.mode
        if mode == "rate_limited":
            resets = math.ceil(behavior.resets_at or time.time() + 3600)
            message = json.dumps({"type": "exceeded_limit", "resetsAt": resets, "remaining": None, "perModelLimit": False})
            return _error(429, "rate_limit_error", message)
        if mode == "invalid":
            return _error(403, "permission_error", "Invalid authorization")
        if mode == "banned":
            return _error(400, "invalid_request_error", "This organization has been disabled.")
        if mode == "region":
            return _error(403, "permission_error", "We are unable to serve your request")
        if mode == "cloudflare_302":
            return web.Response(status=302, headers={"Location": "/challenge"})
        if mode == "cloudflare_html":
            return web.Response(status=403, body=CLOUDFLARE_PAGE, content_type="text/html", headers={"cf-mitigated": "challenge"})
        if mode == "server_error":
            return _error(500, "api_error", "Internal server error")
        if mode == "unavailable":
            return web.Response(status=503, text="upstream connect error or disconnect/reset before headers")
        return None

    # -- control (benchmarks drive a fake in another process through these) ----------------------

    async def _stats(self, _: web.Request) -> web.Response:
        names = [c.name for c in self.calls]
        return web.json_response(
            {
                "calls": {n: names.count(n) for n in set(names)},
                "connections": self.new_connections,
                "open_streams": self.open_streams,
                "live_conversations": len(self.conversations),
                "disconnects": self.disconnects,
            }
        )

    async def _config(self, request: web.Request) -> web.Response:
        body = await request.json()
        for name in ("latency", "chunk_delay", "chunks", "inline_create"):
            if name in body:
                setattr(self, name, body[name])
        if body.get("reset"):
            self.calls.clear()
            self.new_connections = 0
        return web.json_response({"ok": True})

    # -- endpoints -------------------------------------------------------------------------------

    async def _orgs(self, request: web.Request) -> web.StreamResponse:
        behavior = await self._record("orgs", request)
        if (failed := self._failure(behavior, "orgs")) is not None:
            return failed
        if behavior.mode == "orgs_error_object":  # a 200 whose body is an error, not a list
            return web.json_response({"error": {"type": "permission_error", "message": "Invalid authorization"}})
        key = self._key(request)
        orgs = [{"uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "api/" + key)), "name": "API", "capabilities": ["api"]}]
        if behavior.mode != "no_chat_org":
            orgs.append({"uuid": org_for(key), "name": "Personal", "capabilities": ["chat", "claude_pro"], "active_flags": []})
        return web.json_response(orgs)

    async def _usage(self, request: web.Request) -> web.StreamResponse:
        """Quota use as the usage page reports it: percent, window names in words, ISO times."""
        behavior = await self._record("usage", request)
        if (failed := self._failure(behavior, "usage")) is not None:
            return failed
        used = self._windows(self._key(request), behavior)

        def window(name: str) -> dict[str, Any]:
            resets = datetime.fromtimestamp(self.window_resets[name], UTC).isoformat().replace("+00:00", "Z")
            return {"utilization": round(used[name] * 100, 2), "resets_at": resets}

        return web.json_response({"five_hour": window("5h"), "seven_day": window("7d"), "seven_day_opus": None})

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        behavior = await self._record("create", request, body)
        if (failed := self._failure(behavior, "create")) is not None:
            return failed
        conv = str((body or {}).get("uuid") or uuid.uuid4())
        self.conversations[conv] = {"org": request.match_info["org"], "settings": {}, "key": self._key(request)}
        return web.json_response({"uuid": conv, "name": "", "settings": {}}, status=201)

    async def _settings(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        await self._record("settings", request, body)
        conv = self.conversations.get(request.match_info["conv"])
        if conv is None:
            return _error(404, "not_found_error", "Not found")
        conv["settings"].update((body or {}).get("settings") or {})
        return web.json_response({"uuid": request.match_info["conv"], "settings": conv["settings"]})

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        await self._record("delete", request)
        conv = request.match_info["conv"]
        if self.conversations.pop(conv, None) is None:
            return _error(404, "not_found_error", "Not found")
        self.deleted.append(conv)
        return web.Response(status=204)

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        files: list[tuple[str, str, bytes]] = []
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, BodyPartReader) and part.name == "file":
                files.append((part.filename or "", part.headers.get("Content-Type", ""), await part.read()))
        self.uploading += 1
        self.max_parallel_uploads = max(self.max_parallel_uploads, self.uploading)
        try:
            behavior = await self._record("upload", request, files=files)
        finally:
            self.uploading -= 1
        if (failed := self._failure(behavior, "upload")) is not None:
            return failed
        if not files:
            return _error(400, "invalid_request_error", "file is required")
        file_id = str(uuid.uuid4())
        self.uploads[file_id] = files[0]
        return web.json_response({"file_uuid": file_id, "file_name": files[0][0], "success": True})

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request) or {}
        behavior = await self._record("completion", request, body)
        if (failed := self._failure(behavior, "completion")) is not None:
            return failed
        if behavior.mode == "hang":
            await _silence(request)
            return web.Response(status=500)
        if refused := sorted(f for f in behavior.refuse_fields if f in body):
            return _error(400, "invalid_request_error", f"{refused[0]}: Extra inputs are not permitted")
        requested = str(body.get("model") or "")
        if behavior.models is not None and requested and requested not in behavior.models:
            return _error(403, "permission_error", "This model isn't available on your plan. Upgrade to use it.")
        if behavior.accept_delay:
            # Like claude.ai, the chat is created even if the caller has gone meanwhile.
            await asyncio.sleep(behavior.accept_delay)
        if behavior.mode == "reset" and request.transport is not None:
            request.transport.abort()
            return web.Response(status=500)
        conv_id = request.match_info["conv"]
        params = body.get("create_conversation_params")
        if (
            conv_id not in self.conversations
            and self.inline_create
            and isinstance(params, dict)
            and params.get("uuid") == conv_id
        ):
            settings = {"paprika_mode": params["paprika_mode"]} if params.get("paprika_mode") else {}
            self.conversations[conv_id] = {"org": request.match_info["org"], "settings": settings, "key": self._key(request)}
        conv = self.conversations.get(conv_id)
        if conv is None:
            if params and self.inline_refusal != 404:
                return _error(
                    self.inline_refusal, "invalid_request_error", "create_conversation_params: Extra inputs are not permitted"
                )
            return _error(404, "not_found_error", "Conversation not found")
        model = str(body.get("model") or "claude-default")
        thinking = conv["settings"].get("paprika_mode") == "extended"
        text = behavior.text if behavior.text is not None else self.reply(model, str(body.get("prompt", "")))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        self.open_streams += 1
        try:
            # Like claude.ai, it searches only where the conversation has web search switched on.
            asked = any(isinstance(t, dict) and t.get("type") == "web_search_v0" for t in body.get("tools") or [])
            await self._answer(resp, behavior, model, text, thinking, self._key(request), behavior.search if asked else None)
        except ConnectionResetError:
            self.disconnects += 1
        except asyncio.CancelledError:
            self.disconnects += 1
            raise
        finally:
            self.open_streams -= 1
            self.stream_closed.set()
        return resp

    async def _answer(
        self, resp: web.StreamResponse, behavior: Behavior, model: str, text: str, thinking: bool, key: str, search: str | None
    ) -> None:
        delay = self.chunk_delay if behavior.chunk_delay is None else behavior.chunk_delay
        msg: dict[str, Any] = {
            "id": "chatcompl_" + uuid.uuid4().hex[:12],
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "uuid": str(uuid.uuid4()),
        }
        await resp.write(_sse("message_start", {"type": "message_start", "message": msg}))
        if behavior.first_delay:
            await asyncio.sleep(behavior.first_delay)
        if behavior.mode == "overloaded":
            await resp.write(_sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
            return
        if behavior.mode == "garbage":
            await resp.write(b"\x00\xff junk\ndata: {not json\n\nevent: what\ndata: [1, 2]\n\n: more\n")
            return
        index = 0
        if search:
            index = await self._search(resp, index, search)
        if thinking:
            thought = behavior.thinking or "Let me think about this step by step."
            index = await self._thinking(resp, index, thought, behavior.thinking_form)
            if behavior.interleave:
                first, _, text = text.partition(" ")
                await self._text_block(resp, index, first + " ")
                index = await self._thinking(resp, index + 1, "And once more.", behavior.thinking_form)
        await resp.write(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
        )
        frames = [_text_delta(index, piece) for piece in _pieces(text, self.chunks)]
        if search and frames:
            # The first words cite the first search result, as claude.ai marks cited spans.
            cite = {
                "uuid": str(uuid.uuid4()),
                "title": "Result 0",
                "url": "https://example.org/0",
                "sources": [],
                "metadata": {"type": "webpage_metadata", "site_domain": "example.org", "site_name": "Example"},
                "origin_tool_name": "web_search",
            }
            opening = {"type": "citation_start_delta", "citation": cite}
            closing = {"type": "citation_end_delta", "citation_uuid": cite["uuid"]}
            frames[0:1] = [
                _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": opening}),
                frames[0],
                _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": closing}),
            ]
        if not delay and behavior.mode not in ("drop", "stall"):
            # As fast as a socket takes it: batches of frames, so the fake is never the bottleneck.
            for i in range(0, len(frames), FAST_BATCH):
                await resp.write(b"".join(frames[i : i + FAST_BATCH]))
        for n, frame in enumerate(frames if delay or behavior.mode in ("drop", "stall") else []):
            if behavior.mode == "stall" and n == behavior.drop_after:
                assert resp._req is not None
                await _silence(resp._req)
                return
            if behavior.mode == "drop" and n == behavior.drop_after:
                await resp.write(b": cut\n\n")
                assert resp._req is not None and resp._req.transport is not None
                resp._req.transport.abort()  # like a network failure: no terminating chunk
                await asyncio.sleep(0)
                return
            await resp.write(frame)
            if delay:
                await asyncio.sleep(delay)
        await resp.write(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        if behavior.tool_block:
            await self._tool_block(resp, index + 1, *behavior.tool_block)
        await resp.write(
            _sse(
                "message_delta", {"type": "message_delta", "delta": {"stop_reason": behavior.stop_reason, "stop_sequence": None}}
            )
        )
        limit: dict[str, Any] = {
            "type": "within_limit",
            "resetsAt": None,
            "remaining": None,
            "windows": self._window_report(key, behavior),
        }
        if behavior.mode == "limit_after":
            limit = {"type": "exceeded_limit", "resetsAt": math.ceil(behavior.resets_at or time.time() + 3600), "remaining": 0}
        await resp.write(_sse("message_limit", {"type": "message_limit", "message_limit": limit}))
        await resp.write(_sse("message_stop", {"type": "message_stop"}))

    @staticmethod
    async def _thinking(resp: web.StreamResponse, index: int, thought: str, form: str) -> int:
        """A thinking block: full thinking deltas, summary deltas only, or both; returns the next index."""
        await resp.write(
            _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "summaries": []},
                },
            )
        )
        for piece in _pieces(thought, None) if form in ("full", "both") else []:
            await resp.write(
                _sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": piece}},
                )
            )
        if form in ("summary", "both"):
            delta = {"type": "thinking_summary_delta", "summary": {"summary": thought}}
            await resp.write(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        await resp.write(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        return index + 1

    @staticmethod
    async def _text_block(resp: web.StreamResponse, index: int, text: str) -> None:
        await resp.write(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": "", "citations": []}},
            )
        )
        await resp.write(_text_delta(index, text))
        await resp.write(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))

    @staticmethod
    async def _search(resp: web.StreamResponse, index: int, query: str) -> int:
        """claude.ai's own web search: a tool_use block, then its (large) tool_result block."""
        start: dict[str, Any] = {
            "type": "tool_use",
            "id": "toolu_" + uuid.uuid4().hex[:8],
            "name": "web_search",
            "input": {},
            "message": "Searching the web",
            "integration_name": None,
            "icon_name": "globe",
        }
        await resp.write(_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        raw = json.dumps({"query": query})
        for i in range(0, len(raw), 7):
            delta = {"type": "input_json_delta", "partial_json": raw[i : i + 7]}
            await resp.write(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        await resp.write(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        results = [
            {
                "type": "knowledge",
                "title": f"Result {n}",
                "url": f"https://example.org/{n}",
                "text": "x" * 300,
                "metadata": {"type": "webpage_metadata", "site_domain": "example.org", "site_name": "Example"},
            }
            for n in range(3)
        ]
        block = {"type": "tool_result", "tool_use_id": start["id"], "name": "web_search", "content": results, "is_error": False}
        await resp.write(_sse("content_block_start", {"type": "content_block_start", "index": index + 1, "content_block": block}))
        await resp.write(_sse("content_block_stop", {"type": "content_block_stop", "index": index + 1}))
        return index + 2

    @staticmethod
    async def _tool_block(resp: web.StreamResponse, index: int, name: str, args: dict[str, Any]) -> None:
        """A tool_use block whose input arrives as JSON fragments, as claude.ai streams artifacts."""
        start = {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:8], "name": name, "input": {}}
        await resp.write(_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        raw = json.dumps(args)
        step = max(1, len(raw) // 3)
        for i in range(0, len(raw), step):
            delta = {"type": "input_json_delta", "partial_json": raw[i : i + step]}
            await resp.write(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        await resp.write(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))


async def _silence(request: web.BaseRequest) -> None:
    """Say nothing for as long as the caller waits (it gives up by closing the connection)."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(SILENCE_POLL)


def _text_delta(index: int, piece: str) -> bytes:
    return _sse(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
    )


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}
    return web.json_response(body, status=status)


def _pieces(text: str, count: int | None) -> list[str]:
    """Split text into streaming pieces: word by word, or `count` pieces of generated length."""
    if count:
        return [f"token{i} " for i in range(count)]
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]] if words else [text]


# How relay offers tools in a prompt (relay/tools.py); the demo plays a model that follows it.
_OFFERED_TOOL = re.compile(r"^- ([A-Za-z0-9_\-]+)(?: - .*)?\n  parameters \(JSON schema\): (\{.*\})$", re.MULTILINE)


def _example_value(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}.get(str(kind), "example")


def demo_reply(model: str, prompt: str) -> str:
    """The demo answer: calls the first offered tool once, else says what it is and echoes the last line."""
    tool = _OFFERED_TOOL.search(prompt)
    if tool and "[tool result (" not in prompt:
        schema = json.loads(tool[2])
        props = schema.get("properties") or {}
        args = {name: _example_value(props.get(name)) for name in schema.get("required") or []}
        return "Let me use a tool.\n<tool_call>" + json.dumps({"name": tool[1], "arguments": args}) + "</tool_call>"
    last = next((ln for ln in reversed(prompt.splitlines()) if ln.strip()), "")
    last = last.split(":", 1)[1].strip() if last.startswith(("Human:", "User:")) else last.strip()
    return (
        f"Hello from relay's demo upstream ({model}). This is not Claude: it is a local fake of claude.ai. You said: {last[:200]}"
    )
