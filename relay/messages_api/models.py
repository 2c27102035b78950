"""Anthropic Messages request models, and their translation into the conversation relay works on."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from ..errors import InvalidRequest
from ..chat_api.models import FileData, FilePart, ImagePart, ImageURL, Message, TextPart, ToolCall
from ..claude.tools import ToolPlan, ToolSpec


class _Wire(BaseModel):
    # Anthropic clients (Claude Code among them) send fields relay has no use for, e.g. cache_control.
    model_config = ConfigDict(extra="ignore")


class Block(_Wire):
    """Any content block; the fields that matter depend on `type`."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    source: dict[str, Any] | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None
    title: str | None = None


class AnthropicMessage(_Wire):
    role: Literal["user", "assistant", "system"]  # Claude Code sends system notes between turns
    content: str | list[Block]


class AnthropicTool(_Wire):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] = {}
    type: str | None = None


class MessagesRequest(_Wire):
    model: str = Field(min_length=1, max_length=128)
    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[Block] | None = None
    stream: StrictBool = False
    stop_sequences: list[str] | None = None
    thinking: dict[str, Any] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: dict[str, Any] | None = None


class CountTokensRequest(_Wire):
    model: str = Field(min_length=1, max_length=128)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[Block] | None = None
    tools: list[AnthropicTool] | None = None


def thinking_requested(req: MessagesRequest) -> bool:
    return bool(req.thinking) and req.thinking.get("type") in ("enabled", "adaptive")  # type: ignore[union-attr]


def tool_plan(tools: list[AnthropicTool] | None, choice: dict[str, Any] | None) -> ToolPlan | None:
    """Anthropic `tools` / `tool_choice` as a ToolPlan (server tools such as web search are not offered)."""
    specs = tuple(ToolSpec(t.name, t.description or "", t.input_schema) for t in tools or [] if not t.type or t.type == "custom")
    if not specs:
        return None
    kind = (choice or {}).get("type", "auto")
    if kind == "none":
        return ToolPlan(specs, "none")
    if kind == "any":
        return ToolPlan(specs, "required")
    if kind == "tool":
        name = (choice or {}).get("name")
        if name not in {s.name for s in specs}:
            raise InvalidRequest("tool_choice.name: must name one of the tools", param="tool_choice.name")
        return ToolPlan(specs, "required", forced=name)
    return ToolPlan(specs)


def _text(blocks: str | list[Block] | None) -> str:
    if blocks is None:
        return ""
    if isinstance(blocks, str):
        return blocks
    return "\n".join(b.text or "" for b in blocks if b.type == "text")


def _media(block: Block, where: str) -> TextPart | ImagePart | FilePart:
    """An image or document block as the OpenAI-style part the prompt builder reads."""
    source = block.source or {}
    kind = source.get("type")
    if kind == "base64":
        url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
    elif kind == "url":
        url = str(source.get("url", ""))
    elif kind == "text" and block.type == "document":
        return TextPart(type="text", text=f"[document {block.title or ''}]\n{source.get('data', '')}")
    else:
        raise InvalidRequest(f"{where}.source: type must be base64 or url", param=f"{where}.source")
    if block.type == "image":
        return ImagePart(type="image_url", image_url=ImageURL(url=url))
    if kind == "url":
        raise InvalidRequest(f"{where}.source: documents must be sent as base64", param=f"{where}.source")
    return FilePart(type="file", file=FileData(file_data=url, filename=block.title or "document.pdf"))


def to_messages(req: MessagesRequest | CountTokensRequest) -> list[Message]:
    """The Anthropic conversation as relay's message list: system first, tool use and results kept."""
    out: list[Message] = []
    if system := _text(req.system):
        out.append(Message(role="system", content=system))
    for i, msg in enumerate(req.messages):
        if isinstance(msg.content, str):
            out.append(Message(role=msg.role, content=msg.content))
            continue
        parts: list[TextPart | ImagePart | FilePart] = []
        calls: list[ToolCall] = []
        for j, block in enumerate(msg.content):
            where = f"messages.{i}.content.{j}"
            if block.type == "text":
                parts.append(TextPart(type="text", text=block.text or ""))
            elif block.type in ("image", "document"):
                parts.append(_media(block, where))
            elif block.type == "tool_use":
                calls.append(ToolCall(id=block.id or "", function={"name": block.name or "", "arguments": json.dumps(block.input or {})}))  # type: ignore[arg-type]
            elif block.type == "tool_result":
                if parts:
                    out.append(Message(role=msg.role, content=parts))
                    parts = []
                result = _text(block.content) if not isinstance(block.content, str) else block.content
                out.append(Message(role="tool", tool_call_id=block.tool_use_id, content=("[error] " if block.is_error else "") + result))
            elif block.type in ("thinking", "redacted_thinking"):
                continue  # earlier thinking is not replayed to the model
            else:
                parts.append(TextPart(type="text", text=json.dumps(block.model_dump(exclude_none=True), ensure_ascii=False)))
        if parts or calls:
            out.append(Message(role=msg.role, content=parts or None, tool_calls=calls or None))
    return out
