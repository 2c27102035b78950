"""A fake claude.ai web API: a real aiohttp app that answers like the upstream and records every call.

It serves `relay --demo`, the test suite and the benchmark. Each account (sessionKey) can be
scripted to fail the way real accounts do: rate limited, invalid, banned, region or Cloudflare
blocked, overloaded, dropping the stream, or slow (`behavior.py`); answers are written by
`stream.py`, and the demo model's words come from `model.py`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import BodyPartReader, web

from .behavior import CLOUDFLARE_PAGE, MODES, Behavior, Call, org_for
from .chats import take_turn
from .model import demo_reply
from .stream import AnswerPlan, silence, write_answer


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
        self.per_event = False  # write every event (and ping) in its own write, as claude.ai does
        self.inline_refusal = 404  # the status for an unknown chat when inline creation is off
        # A chat continued past this many characters (every message on the way to the new one) is
        # "too long to continue", as claude.ai says when a chat outgrows the model's context.
        self.max_conversation_chars = 10_000_000
        self.open_streams = 0
        self.seen: list[str] = []  # the whole conversation the model read, per completion
        self.hanging = 0  # "hang" completions whose caller still holds the connection
        self.left_before_answer = 0  # held completions whose caller had closed the connection
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
        if mode == "new_error":
            return _error(400, "conversation_locked_error", "This conversation is locked.")
        if mode == "unavailable":
            return web.Response(status=503, text="upstream connect error or disconnect/reset before headers")
        if mode == "deep_json":
            return web.Response(status=500, text='{"error": ' + "[" * 5000 + "]" * 5000 + "}", content_type="application/json")
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
        for name in ("latency", "chunk_delay", "chunks", "inline_create", "per_event"):
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
        self.conversations[conv] = {"org": request.match_info["org"], "settings": {}, "key": self._key(request), "messages": {}}
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
            # Held open without a byte, not even headers, for as long as the caller keeps it.
            self.hanging += 1
            try:
                await silence(request)
            finally:
                self.hanging -= 1
            return web.Response(status=500)
        if (refusal := _refusal(body, behavior)) is not None:
            return refusal
        # Like claude.ai, the chat is created even if the caller hangs up while it waits.
        conv = await asyncio.shield(self._accept(request, body, behavior))
        if isinstance(conv, web.Response):
            return conv
        thinking = conv["settings"].get("paprika_mode") == "extended"
        turn = take_turn(conv["messages"], body, self.max_conversation_chars)
        if isinstance(turn, web.Response):
            return turn
        self.seen.append(turn.conversation)
        text = behavior.text if behavior.text is not None else self.reply(_model(body), turn.conversation)
        turn.answer(text)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        self.open_streams += 1
        try:
            await write_answer(resp, self._plan(request, body, behavior, text, thinking, turn.assistant))
        except ConnectionResetError:
            self.disconnects += 1
        except asyncio.CancelledError:
            self.disconnects += 1
            raise
        finally:
            self.open_streams -= 1
            self.stream_closed.set()
        return resp

    async def _accept(self, request: web.Request, body: dict[str, Any], behavior: Behavior) -> dict[str, Any] | web.Response:
        """The completion's chat once claude.ai takes the request on (after any scripted hold or
        delay), or its refusal."""
        if behavior.hold_start is not None:
            await behavior.hold_start.wait()
            if request.transport is None or request.transport.is_closing():
                self.left_before_answer += 1
        if behavior.accept_delay:
            await asyncio.sleep(behavior.accept_delay)
        if behavior.mode == "reset" and request.transport is not None:
            request.transport.abort()
            return web.Response(status=500)
        conv = self._conversation(request, body)
        if conv is None:
            if body.get("create_conversation_params") and self.inline_refusal != 404:
                message = "create_conversation_params: Extra inputs are not permitted"
                return _error(self.inline_refusal, "invalid_request_error", message)
            return _error(404, "not_found_error", "Conversation not found")
        return conv

    def _conversation(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any] | None:
        """The completion's chat: known, or created now from `create_conversation_params`."""
        conv_id = request.match_info["conv"]
        params = body.get("create_conversation_params")
        inline = self.inline_create and isinstance(params, dict) and params.get("uuid") == conv_id
        if conv_id not in self.conversations and inline:
            assert isinstance(params, dict)
            settings = {"paprika_mode": params["paprika_mode"]} if params.get("paprika_mode") else {}
            self.conversations[conv_id] = {
                "org": request.match_info["org"],
                "settings": settings,
                "key": self._key(request),
                "messages": {},
            }
        return self.conversations.get(conv_id)

    def _plan(
        self, request: web.Request, body: dict[str, Any], behavior: Behavior, text: str, thinking: bool, message: str
    ) -> AnswerPlan:
        # Like claude.ai, it searches only where the conversation has web search switched on.
        asked = any(isinstance(t, dict) and t.get("type") == "web_search_v0" for t in body.get("tools") or [])
        return AnswerPlan(
            behavior,
            _model(body),
            text,
            thinking,
            behavior.search if asked else None,
            self.chunks,
            self.chunk_delay if behavior.chunk_delay is None else behavior.chunk_delay,
            self._window_report(self._key(request), behavior),
            message,
            self.per_event,
        )


def _error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}
    return web.json_response(body, status=status)


def _refusal(body: dict[str, Any], behavior: Behavior) -> web.Response | None:
    """claude.ai refusing fields the account does not take, or a model its plan lacks."""
    if refused := sorted(f for f in behavior.refuse_fields if f in body):
        return _error(400, "invalid_request_error", f"{refused[0]}: Extra inputs are not permitted")
    requested = str(body.get("model") or "")
    if behavior.models is not None and requested and requested not in behavior.models:
        return _error(403, "permission_error", "This model isn't available on your plan. Upgrade to use it.")
    return None


def _model(body: dict[str, Any]) -> str:
    return str(body.get("model") or "claude-default")
