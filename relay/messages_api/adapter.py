"""Anthropic Messages as a client API: wire request to `Chat`, answers as events or a `message`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..client_api import ApiRequest, ClientApi, validate
from ..conversation import (
    Chat,
    Effort,
    FilePart,
    ImagePart,
    OutputFormat,
    Part,
    PastCall,
    TextPart,
    ToolPlan,
    ToolSpec,
    Turn,
    decode_base64,
    output_format,
    require_content,
)
from ..errors import InvalidRequest, RelayError
from .models import AnthropicTool, Block, CountTokensRequest, MessagesRequest, ToolChoice
from .render import MessageRenderer, error_body


@dataclass(slots=True)
class MessagesCall(ApiRequest):
    thinking_shown: bool = True  # thinking blocks carry their text (not `thinking.display: omitted`)


class Messages(ClientApi[MessagesCall]):
    name = "messages"
    wire = "anthropic"

    def parse(self, body: object) -> MessagesCall:
        req = validate(MessagesRequest, body)
        assert isinstance(body, dict)
        chat = Chat(
            model=req.model,
            turns=to_turns(req),
            stream=req.stream,
            tools=tool_plan(req.tools, req.tool_choice, loaded_tools(req)),
            stops=[s for s in req.stop_sequences or [] if s],
            max_tokens=req.max_tokens,
            thinking=req.thinking is not None and req.thinking.type != "disabled",
            effort=effort(req),
            web_search=web_search(req.tools),
            output=_output(req),
        )
        return MessagesCall(chat, body, thinking_shown=req.thinking is None or req.thinking.shown)

    def renderer(self, request: MessagesCall, prompt_tokens: int) -> MessageRenderer:
        chat = request.chat
        return MessageRenderer(
            chat.model,
            chat.stops,
            prompt_tokens,
            keep=not chat.stream,
            activity=self.activity,
            web_search=chat.web_search,
            thinking_shown=request.thinking_shown,
        )

    def error_body(self, exc: RelayError) -> dict[str, Any]:
        return error_body(exc)

    def parse_count(self, body: object) -> Chat:
        """A `count_tokens` request: the chat whose prompt would be counted."""
        req = validate(CountTokensRequest, body)
        return Chat(model=req.model, turns=to_turns(req), tools=tool_plan(req.tools, None))


def _output(req: MessagesRequest) -> OutputFormat | None:
    """`output_config.format` (json_schema) as the structured answer to check."""
    fmt = req.output_config.format if req.output_config else None
    return output_format(fmt.type, fmt.schema_, None, "output_config.format") if fmt else None


def effort(req: MessagesRequest) -> Effort | None:
    """`output_config.effort` as it is, else the thinking budget read as an effort (Claude Code
    asks for budgets of a few thousand tokens up to 31,999)."""
    if req.output_config and req.output_config.effort:
        return req.output_config.effort
    budget = req.thinking.budget_tokens if req.thinking and req.thinking.type == "enabled" else None
    if budget is None:
        return None
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def web_search(tools: list[AnthropicTool] | None) -> bool:
    """Whether the client offered Anthropic's web search server tool (as Claude Code's WebSearch
    does). claude.ai searches as it sees fit, so `max_uses` is accepted as an upper bound it does
    not exceed in practice; domain lists cannot be passed on and are refused rather than ignored."""
    found = False
    for i, tool in enumerate(tools or []):
        if tool.type and tool.type.startswith("web_search"):
            for limit in ("allowed_domains", "blocked_domains"):
                if getattr(tool, limit):
                    raise InvalidRequest(
                        f"tools.{i}.{limit}: claude.ai's web search cannot be limited to or from domains",
                        param=f"tools.{i}.{limit}",
                    )
            found = True
    return found


def tool_plan(
    tools: list[AnthropicTool] | None, choice: ToolChoice | None, loaded: frozenset[str] = frozenset()
) -> ToolPlan | None:
    """Anthropic `tools` / `tool_choice` as a ToolPlan (server tools such as web search are not
    offered); `defer_loading` tools are offered once `loaded`."""
    specs = tuple(
        ToolSpec(t.name, t.description or "", t.input_schema, deferred=bool(t.defer_loading), strict=bool(t.strict))
        for t in tools or []
        if not t.type or t.type == "custom"
    )
    if not specs:
        return None
    kind = choice.type if choice else "auto"
    if kind == "tool":
        name = choice.name if choice else None
        if name not in {s.name for s in specs}:
            raise InvalidRequest("tool_choice.name: must name one of the tools", param="tool_choice.name")
        return ToolPlan(specs, "required", forced=name, loaded=loaded)
    return ToolPlan(specs, {"none": "none", "any": "required"}.get(kind, "auto"), loaded=loaded)  # type: ignore[arg-type]


def loaded_tools(req: CountTokensRequest) -> frozenset[str]:
    """Deferred tools the conversation has loaded: named by a tool_reference in a tool result, or
    called already."""
    names: set[str] = set()
    for msg in req.messages:
        for block in msg.content if isinstance(msg.content, list) else []:
            if block.type == "tool_use" and block.name:
                names.add(block.name)
            elif block.type == "tool_result" and isinstance(block.content, list):
                names.update(_reference(b) for b in block.content if b.type == "tool_reference")
    return frozenset(names - {""})


def _text(blocks: str | list[Block] | None) -> str:
    if blocks is None:
        return ""
    if isinstance(blocks, str):
        return blocks
    return "\n".join(b.text or "" for b in blocks if b.type == "text")


# Client bookkeeping that Claude Code puts first in `system` (its version and a billing hash); it
# is no instruction for the model, changes between requests, and never reaches claude.ai.
BOOKKEEPING = ("x-anthropic-billing-header:",)


def _system(blocks: str | list[Block] | None) -> str:
    if isinstance(blocks, list):
        blocks = [b for b in blocks if not (b.type == "text" and (b.text or "").lstrip().startswith(BOOKKEEPING))]
    return _text(blocks)


def _reference(block: Block) -> str:
    """The tool a tool_reference block loads."""
    return str((block.model_extra or {}).get("tool_name") or "")


def _result_parts(content: str | list[Block] | None, where: str, tools: dict[str, ToolSpec]) -> list[Part]:
    """A tool result's content: text, images or documents (Claude Code's Read of a PNG), and the
    tools a tool_reference loads, described as the model needs them."""
    if not isinstance(content, list):
        return [TextPart(_text(content))]
    parts: list[Part] = []
    for k, block in enumerate(content):
        if block.type in ("image", "document"):
            parts.append(_media(block, f"{where}.{k}"))
        elif block.type == "text":
            parts.append(TextPart(block.text or ""))
        elif block.type == "tool_reference" and (name := _reference(block)):
            spec = tools.get(name)
            parts.append(TextPart(spec.loaded_note() if spec else f"[tool loaded] {name}"))
    return parts


def _media(block: Block, where: str) -> Part:
    """An image or document block; base64 is decoded here, so a bad one is the client's 400."""
    source = block.source or {}
    kind = source.get("type")
    media = str(source.get("media_type") or "")
    if kind == "text" and block.type == "document":
        return TextPart(f"[document {block.title or ''}]\n{source.get('data', '')}")
    if kind not in ("base64", "url"):
        raise InvalidRequest(f"{where}.source.type: must be base64 or url", param=f"{where}.source.type")
    if block.type == "image":
        if kind == "url":
            return ImagePart(f"{where}.source.url", url=str(source.get("url", "")))
        return ImagePart(
            f"{where}.source.data", data=decode_base64(str(source.get("data", "")), f"{where}.source.data"), media_type=media
        )
    if kind == "url":
        raise InvalidRequest(f"{where}.source: documents must be sent as base64", param=f"{where}.source")
    data = decode_base64(str(source.get("data", "")), f"{where}.source.data")
    return FilePart(f"{where}.source.data", block.title or "document.pdf", media or "application/pdf", data)


def to_turns(req: CountTokensRequest) -> list[Turn]:
    """The Anthropic conversation as turns: system first, tool use and results kept."""
    out: list[Turn] = []
    plan = tool_plan(req.tools, None)
    tools = {t.name: t for t in plan.tools} if plan else {}
    if system := _system(req.system):
        out.append(Turn("system", [TextPart(system)]))
    for i, msg in enumerate(req.messages):
        if isinstance(msg.content, str):
            out.append(Turn(msg.role, [TextPart(msg.content)]))
            continue
        parts: list[Part] = []
        calls: list[PastCall] = []
        for j, block in enumerate(msg.content):
            where = f"messages.{i}.content.{j}"
            if block.type == "text":
                parts.append(TextPart(block.text or ""))
            elif block.type in ("image", "document"):
                parts.append(_media(block, where))
            elif block.type == "tool_use":
                calls.append(PastCall(block.id or "", block.name or "", json.dumps(block.input or {})))
            elif block.type == "tool_result":
                if parts:
                    out.append(Turn(msg.role, parts))
                    parts = []
                result = _result_parts(block.content, f"{where}.content", tools)
                out.append(Turn("tool", result, call_id=block.tool_use_id, is_error=bool(block.is_error)))
            elif block.type in ("thinking", "redacted_thinking"):
                continue  # earlier thinking is not replayed to the model
            else:
                parts.append(TextPart(json.dumps(block.model_dump(exclude_none=True), ensure_ascii=False)))
        if parts or calls:
            out.append(Turn(msg.role, parts, calls))
    require_content(out, "messages")
    return out
