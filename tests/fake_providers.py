"""Fake fallback providers: an OpenAI-compatible API and the Anthropic API, as real aiohttp apps."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class FakeProvider:
    """Records each request; answers `text` (or a tool call), or fails with `fail_status`."""

    path = ""

    def __init__(self, text: str = "answer from the fallback", tool_call: tuple[str, dict[str, Any]] | None = None) -> None:
        self.text = text
        self.tool_call = tool_call
        self.fail_status: int | None = None
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.app = web.Application()
        self.app.router.add_post(self.path, self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        if self.fail_status:
            return web.json_response({"error": {"message": "provider down", "type": "api_error"}}, status=self.fail_status)
        return await self.answer(request, body)

    async def answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        raise NotImplementedError


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


class FakeOpenAI(FakeProvider):
    path = "/v1/chat/completions"

    async def answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        model = body["model"]
        calls = []
        if self.tool_call:
            name, args = self.tool_call
            calls = [{"id": "call_fb1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None if calls else self.text}
            if calls:
                message["tool_calls"] = calls
            return web.json_response(
                {
                    "id": "chatcmpl-fb",
                    "object": "chat.completion",
                    "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "chatcmpl-fb", "object": "chat.completion.chunk", "created": 1, "model": model}
        await resp.write(
            _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        )
        if calls:
            call = calls[0]
            first = {
                "index": 0,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            await resp.write(_sse({**base, "choices": [{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}]}))
            args = call["function"]["arguments"]
            more = {"index": 0, "function": {"arguments": args}}
            await resp.write(_sse({**base, "choices": [{"index": 0, "delta": {"tool_calls": [more]}, "finish_reason": None}]}))
        else:
            for word in self.text.split(" "):
                piece = word if word == self.text.split(" ")[-1] else word + " "
                await resp.write(_sse({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}))
        done = "tool_calls" if calls else "stop"
        await resp.write(_sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": done}]}))
        await resp.write(b"data: [DONE]\n\n")
        return resp


class FakeAnthropic(FakeProvider):
    path = "/v1/messages"

    async def answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": self.text}]
        if self.tool_call:
            blocks = [{"type": "tool_use", "id": "toolu_fb1", "name": self.tool_call[0], "input": self.tool_call[1]}]
        stop = "tool_use" if self.tool_call else "end_turn"
        message = {
            "id": "msg_fb",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 4},
        }
        if not body.get("stream"):
            return web.json_response(message)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        start = {**message, "content": [], "stop_reason": None}
        await resp.write(_sse({"type": "message_start", "message": start}, "message_start"))
        block = blocks[0]
        if block["type"] == "text":
            await resp.write(
                _sse(
                    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                    "content_block_start",
                )
            )
            for word in self.text.split(" "):
                piece = word if word == self.text.split(" ")[-1] else word + " "
                delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
                await resp.write(_sse(delta, "content_block_delta"))
        else:
            start_block = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            await resp.write(
                _sse({"type": "content_block_start", "index": 0, "content_block": start_block}, "content_block_start")
            )
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
            }
            await resp.write(_sse(delta, "content_block_delta"))
        await resp.write(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        await resp.write(
            _sse({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 4}}, "message_delta")
        )
        await resp.write(_sse({"type": "message_stop"}, "message_stop"))
        return resp
