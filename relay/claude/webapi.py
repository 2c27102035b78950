"""Everything relay knows about the claude.ai web API: paths, headers, bodies, and its SSE events.

Pure functions and a stateful event reader; the I/O lives in `upstream.py`. Unknown events and
fields are ignored so that upstream changes degrade gracefully.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson
from loguru import logger

from .failures import Failure, UpstreamFailure, classify, classify_stream_error, org_flag_failure
from ..reply import Finish, LimitReached, ReplyEvent, Text, Thinking, ToolCall
from ..sse import SSEEvent

# The web app sends this parent for the first turn of a new conversation.
ROOT_PARENT_UUID = "00000000-0000-4000-8000-000000000000"


def orgs_path() -> str:
    return "/api/organizations"


def conversations_path(org: str) -> str:
    return f"/api/organizations/{org}/chat_conversations"


def conversation_path(org: str, conv: str) -> str:
    return f"/api/organizations/{org}/chat_conversations/{conv}"


def completion_path(org: str, conv: str) -> str:
    return f"/api/organizations/{org}/chat_conversations/{conv}/completion"


def upload_path(org: str) -> str:
    # The legacy upload route has no `organizations/` segment.
    return f"/api/{org}/upload"


def base_headers(origin: str) -> dict[str, str]:
    """Headers the web app sends on every call; the User-Agent comes from the impersonated browser."""
    return {
        "Origin": origin,
        "Referer": f"{origin}/new",
        "Accept": "application/json",
        "Accept-Language": "en-US,en;q=0.9",
        "anthropic-client-platform": "web_claude_ai",
    }


def choose_org(status: int, headers: dict[str, str], body: bytes) -> str:
    """The chat-capable organization with the most capabilities, or a classified failure."""
    try:
        orgs = json.loads(body) if status == 200 else None
    except ValueError:
        orgs = None
    if not isinstance(orgs, list):
        # An error object instead of a list means the cookie was refused, whatever the status said.
        raise classify(status if status >= 300 else 403, headers, body)
    chat = [o for o in orgs if isinstance(o, dict) and "chat" in (o.get("capabilities") or []) and o.get("uuid")]
    if not chat:
        raise UpstreamFailure(Failure.DISABLED, "account has no organization that can chat")
    best = max(chat, key=lambda o: len(o.get("capabilities") or []))
    banned = org_flag_failure(best.get("active_flags"))
    if banned:
        raise banned
    return str(best["uuid"])


def conversation_body(conv: str, model: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"uuid": conv, "name": "", "include_conversation_preferences": True}
    if model:
        body["model"] = model
    return body


def conversation_params(conv: str, model: str | None, thinking: bool) -> dict[str, Any]:
    """`create_conversation_params`: the newer web app creates the chat with its first completion."""
    params = conversation_body(conv, model)
    params["is_temporary"] = False
    if thinking:
        params["paprika_mode"] = "extended"
    return params


def thinking_settings_body() -> dict[str, Any]:
    """Extended thinking for one conversation; account-wide settings are never touched."""
    return {"settings": {"paprika_mode": "extended"}}


@dataclass(slots=True)
class TextAttachment:
    """Text sent inline with the completion (long history, text files); needs no upload."""

    file_name: str
    content: str

    def wire(self) -> dict[str, Any]:
        return {
            "extracted_content": self.content,
            "file_name": self.file_name,
            "file_type": "text/plain",
            "file_size": len(self.content.encode()),
        }


def completion_body(
    prompt: str,
    *,
    model: str | None,
    attachments: list[TextAttachment],
    files: list[str],
    artifacts: bool,
    create: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The completion request of a fresh single-turn conversation (created on the way with `create`)."""
    body: dict[str, Any] = {
        "prompt": prompt,
        "parent_message_uuid": ROOT_PARENT_UUID,
        "timezone": "UTC",
        "attachments": [a.wire() for a in attachments],
        "files": files,
        "sync_sources": [],
        "rendering_mode": "messages",
        "tools": [{"type": "artifacts_v0", "name": "artifacts"}] if artifacts else [],
    }
    if model:
        body["model"] = model
    if create:
        body["create_conversation_params"] = create
    return body


@dataclass(slots=True)
class _Block:
    kind: str
    name: str = ""
    id: str = ""
    parts: list[str] = field(default_factory=list)


def render_tool_block(name: str, raw_input: str) -> str:
    """Markdown for an upstream tool_use block (artifacts, web search, ...), never raw JSON fragments."""
    try:
        args = json.loads(raw_input) if raw_input.strip() else {}
    except ValueError:
        args = {"input": raw_input}
    if not isinstance(args, dict):
        args = {"input": args}
    if name == "artifacts":
        title = args.get("title") or args.get("id") or "artifact"
        if "content" in args:
            lang = args.get("language") or _artifact_language(str(args.get("type", "")))
            return f"\n\n**{title}**\n\n```{lang}\n{str(args['content']).rstrip()}\n```\n\n"
        if "new_str" in args:
            return (
                f"\n\n**{title}** (update)\n\n```diff\n"
                + "".join(f"- {ln}\n" for ln in str(args.get("old_str", "")).splitlines())
                + "".join(f"+ {ln}\n" for ln in str(args["new_str"]).splitlines())
                + "```\n\n"
            )
    if name == "web_search" and "query" in args:
        return f"\n\n_Searching the web: {args['query']}_\n\n"
    return f"\n\n**{name or 'tool'}**\n\n```json\n{json.dumps(args, ensure_ascii=False, indent=2)}\n```\n\n"


def _artifact_language(kind: str) -> str:
    return {"text/html": "html", "text/markdown": "markdown", "image/svg+xml": "svg", "application/vnd.ant.mermaid": "mermaid"}.get(
        kind, ""
    )


class EventReader:
    """Reads one completion stream's SSE events into reply events; raises UpstreamFailure on `error`."""

    __slots__ = ("_blocks", "_stop_reason", "_tool_calls", "finished")

    def __init__(self, *, tool_calls: bool = False) -> None:
        self._blocks: dict[int, _Block] = {}
        self._stop_reason = "end_turn"
        # claude.ai's own tool blocks (artifacts, search) are shown as markdown; the Anthropic API's
        # tool_use blocks, read from a fallback provider, are the client's function calls.
        self._tool_calls = tool_calls
        self.finished = False

    def feed(self, event: SSEEvent) -> list[ReplyEvent]:
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            logger.debug("upstream sent a non-JSON event {}", event.event)
            return []
        if not isinstance(data, dict):
            return []
        kind = data.get("type") or event.event
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_start":
            return self._start(data)
        if kind == "content_block_stop":
            return self._stop(data)
        if kind == "message_delta":
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self._stop_reason = str(reason)
            return []
        if kind == "message_stop":
            self.finished = True
            return [Finish(self._stop_reason)]
        if kind == "message_limit":
            limit = data.get("message_limit") or {}
            if limit.get("type") == "exceeded_limit":
                resets = limit.get("resetsAt")
                return [LimitReached(float(resets) if isinstance(resets, (int, float)) else None)]
            return []
        if kind == "error" or "error" in data and "completion" not in data:
            err = data.get("error") or {}
            if not isinstance(err, dict):
                err = {"message": str(err)}
            raise classify_stream_error(str(err.get("type") or ""), str(err.get("message") or ""))
        if "completion" in data:  # legacy rendering: every event carries a text chunk
            return self._legacy(data)
        if kind not in ("message_start", "ping"):
            logger.debug("ignoring upstream event {}", kind)
        return []

    def _start(self, data: dict[str, Any]) -> list[ReplyEvent]:
        block = data.get("content_block") or {}
        index = int(data.get("index", len(self._blocks)))
        kind = str(block.get("type", ""))
        self._blocks[index] = _Block(kind, str(block.get("name", "")), str(block.get("id", "")))
        if kind == "text" and block.get("text"):
            return [Text(str(block["text"]))]
        if kind == "thinking" and block.get("thinking"):
            return [Thinking(str(block["thinking"]))]
        return []

    def _delta(self, data: dict[str, Any]) -> list[ReplyEvent]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [Text(delta.get("text", ""))]
        if kind == "thinking_delta":
            return [Thinking(delta.get("thinking", ""))]
        if kind == "input_json_delta":
            block = self._blocks.get(int(data.get("index", -1)))
            if block is not None:
                block.parts.append(str(delta.get("partial_json", "")))
        return []

    def _stop(self, data: dict[str, Any]) -> list[ReplyEvent]:
        block = self._blocks.pop(int(data.get("index", -1)), None)
        if block is None or block.kind != "tool_use":
            return []
        raw = "".join(block.parts)
        if self._tool_calls:
            return [ToolCall(block.id.removeprefix("toolu_"), block.name, raw or "{}")]
        return [Text(render_tool_block(block.name, raw))]

    def _legacy(self, data: dict[str, Any]) -> list[ReplyEvent]:
        out: list[ReplyEvent] = []
        if data.get("completion"):
            out.append(Text(str(data["completion"])))
        if data.get("stop_reason"):
            self.finished = True
            reason = str(data["stop_reason"])
            out.append(Finish("end_turn" if reason == "stop_sequence" else reason))
        return out


def uploaded_file_id(body: bytes) -> str:
    """The id an upload answer gives the file, to be listed in the completion's `files`."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    file_id = (doc.get("file_uuid") or doc.get("uuid")) if isinstance(doc, dict) else None
    if not file_id:
        raise UpstreamFailure(Failure.TRANSIENT, "claude.ai accepted an upload but returned no file id")
    return str(file_id)
