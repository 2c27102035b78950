"""The OpenAI Responses API as a client API: input items to `Chat`, answers as events or a
`response`; answers are kept in the state store for `previous_response_id`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ..client_api import ApiRequest, ClientApi, Memory, validate
from ..conversation import (
    Chat,
    FilePart,
    OutputFormat,
    Part,
    PastCall,
    TextPart,
    ToolPlan,
    ToolSpec,
    Turn,
    decode_base64,
    effort_of,
    freeform_tool,
    media_part,
    output_format,
    require_content,
)
from ..errors import InvalidRequest, NotFound, PayloadTooLarge
from ..render import Activity, Renderer
from .models import Item, NamedChoice, ResponsesRequest, Tool
from .models import Part as WirePart
from .render import ResponseRenderer

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text"})


ToolKind = Literal["custom", "tool_search"]
# The name a client-run tool search is offered under.
TOOL_SEARCH = "tool_search"


@dataclass(slots=True)
class ResponsesCall(ApiRequest):
    req: ResponsesRequest
    items: list[Any]  # the input items as sent (after earlier ones), kept with the answer
    names: dict[str, tuple[str | None, str]]  # offered tool name -> (namespace, function name)
    kinds: dict[str, ToolKind]  # offered tools that are not functions: custom (freeform), tool_search


class Responses(ClientApi[ResponsesCall]):
    name = "responses"
    turns_field = "input"

    def __init__(self, activity: Activity = "compact", max_referenced: int = 32 * 1024 * 1024) -> None:
        super().__init__(activity)
        # What a request may bring back from kept answers, in bytes (MAX_BODY_SIZE): each
        # `item_reference` is a copy, so a body of references to one long item would multiply it
        # in memory, and each turn on `previous_response_id` keeps the whole conversation again.
        self.max_referenced = max_referenced

    def parse(self, body: object) -> ResponsesCall:
        req = validate(ResponsesRequest, body)
        assert isinstance(body, dict)
        if req.background:
            raise InvalidRequest("background: background responses are not supported; leave it false", param="background")
        raw = body["input"]
        items = [{"role": "user", "content": raw}] if isinstance(raw, str) else list(raw)
        wire_items: list[Item] = [Item(role="user", content=raw)] if isinstance(req.input, str) else list(req.input)
        turns = to_turns(wire_items, "input")
        if not any(item.type == "item_reference" for item in wire_items):  # those are read in `recall`
            require_content(turns, "input")
        if req.instructions:
            turns.insert(0, Turn("system", [TextPart(req.instructions)]))
        plan, names, kinds = tool_plan(req)
        effort = effort_of(req.reasoning.effort if req.reasoning else None)
        chat = Chat(
            model=req.model,
            turns=turns,
            stream=req.stream,
            tools=plan,
            max_tokens=req.max_output_tokens,
            thinking=effort is not None,
            effort=effort,
            web_search=web_search(req.tools),
            output=_output(req),
        )
        return ResponsesCall(chat, body, req, items, names, kinds)

    def renderer(self, request: ResponsesCall, prompt_tokens: int) -> ResponseRenderer:
        req = request.req
        echo = {
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "metadata": req.metadata or {},
            "parallel_tool_calls": req.parallel_tool_calls if req.parallel_tool_calls is not None else True,
            "previous_response_id": req.previous_response_id,
            "reasoning": {
                "effort": req.reasoning.effort if req.reasoning else None,
                "summary": req.reasoning.summary if req.reasoning else None,
            },
            "store": req.store,
            "temperature": req.temperature,
            "text": {"format": {"type": "text"}},
            "tool_choice": req.tool_choice.model_dump(exclude_none=True)
            if isinstance(req.tool_choice, NamedChoice)
            else req.tool_choice or "auto",
            "tools": request.body.get("tools") or [],
            "top_p": None,
            "truncation": "disabled",
            "user": None,
        }
        return ResponseRenderer(
            request.chat.model, prompt_tokens, echo=echo, names=request.names, kinds=request.kinds, activity=self.activity
        )

    async def recall(self, request: ResponsesCall, memory: Memory) -> None:
        """`item_reference`s become the items they name (kept with earlier answers), and with
        `previous_response_id` that conversation's items go before this request's input."""
        previous = request.req.previous_response_id
        referenced = await _resolve_references(request.items, memory, self.max_referenced)
        if previous is None:
            if referenced:
                _read_again(request)
            return
        data = await memory.load_answer(previous)
        if data is None:
            raise NotFound(
                f"previous response {previous!r} was not found"
                " (answers are kept for RESPONSE_TTL seconds, and never with store=false)",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        if len(data) > self.max_referenced:  # each turn keeps the whole conversation again
            raise PayloadTooLarge(
                f"previous_response_id: the conversation it continues has outgrown MAX_BODY_SIZE ({self.max_referenced}"
                " bytes); start a new one",
                param="previous_response_id",
            )
        request.items = orjson.loads(data) + request.items
        _read_again(request)

    async def remember(self, request: ResponsesCall, renderer: Renderer, memory: Memory) -> None:
        """The answer under its id, and each output item under its own (the AI SDK refers to them
        with `item_reference` from its second turn)."""
        if request.req.store and isinstance(renderer, ResponseRenderer):
            output = renderer.output_items
            await memory.keep_answer(renderer.id, orjson.dumps(request.items + output))
            for item in output:
                if isinstance(item.get("id"), str):
                    await memory.keep_answer(ITEM_PREFIX + item["id"], orjson.dumps(item))


# Kept output items live beside the answers, under this prefix and their own id.
ITEM_PREFIX = "item:"


async def _resolve_references(items: list[Any], memory: Memory, limit: int) -> bool:
    """Replace each `item_reference` with the item it names; True when there was one."""
    found = False
    size = 0
    for i, item in enumerate(items):
        if not (isinstance(item, dict) and item.get("type") == "item_reference"):
            continue
        found = True
        ref = str(item.get("id") or "")
        data = await memory.load_answer(ITEM_PREFIX + ref) if ref else None
        if data is None:
            raise InvalidRequest(
                f"input.{i}.id: item {ref!r} was not found (items are kept for RESPONSE_TTL seconds, never with store=false)",
                param=f"input.{i}.id",
                code="item_not_found",
            )
        size += len(data)
        if size > limit:
            raise PayloadTooLarge(
                f"input.{i}: the items referenced add up to more than MAX_BODY_SIZE ({limit} bytes)", param=f"input.{i}"
            )
        items[i] = orjson.loads(data)
    return found


def _read_again(request: ResponsesCall) -> None:
    """The whole conversation is read again, so outputs find the calls they answer by id."""
    turns = to_turns([Item.model_validate(i) for i in request.items], "input")
    require_content(turns, "input")
    at = 1 if request.req.instructions else 0
    request.chat.turns[at:] = turns


def _output(req: ResponsesRequest) -> OutputFormat | None:
    """`text.format` (json_object, json_schema) as the structured answer to check."""
    fmt = req.text.format if req.text else None
    return output_format(fmt.type, fmt.schema_, fmt.name, "text.format") if fmt else None


def web_search(tools: list[Tool] | None) -> bool:
    """A `web_search` tool asks for claude.ai's web search, unless it says no external access
    (as Codex CLI does by default); domain filters cannot be passed on and are refused."""
    for i, tool in enumerate(tools or []):
        if tool.type in ("web_search", "web_search_preview") and tool.external_web_access is not False:
            if tool.filters:
                raise InvalidRequest(
                    f"tools.{i}.filters: claude.ai's web search cannot be limited to domains", param=f"tools.{i}.filters"
                )
            return True
    return False


def tool_plan(req: ResponsesRequest) -> tuple[ToolPlan | None, dict[str, tuple[str | None, str]], dict[str, ToolKind]]:
    """Functions, also those grouped in a `namespace` (offered as `namespace.name`), freeform
    `custom` tools (offered with one string argument, `input`) and a client-run `tool_search`;
    hosted tools such as web_search are not client tools."""
    specs: list[ToolSpec] = []
    names: dict[str, tuple[str | None, str]] = {}
    kinds: dict[str, ToolKind] = {}

    def add(tool: Tool | Any, namespace: str | None) -> None:
        offered = f"{namespace}.{tool.name}" if namespace else str(tool.name)
        specs.append(ToolSpec(offered, tool.description or "", tool.parameters or {}, strict=bool(tool.strict)))
        names[offered] = (namespace, str(tool.name))

    for tool in req.tools or []:
        if tool.type == "function" and tool.name:
            add(tool, None)
        elif tool.type == "custom" and tool.name:
            specs.append(custom_spec(tool))
            kinds[tool.name] = "custom"
        elif tool.type == "tool_search" and tool.execution == "client":
            specs.append(ToolSpec(TOOL_SEARCH, tool.description or "Search for more tools", tool.parameters or {}))
            kinds[TOOL_SEARCH] = "tool_search"
        elif tool.type == "namespace" and tool.name:
            for inner in tool.tools or []:
                if inner.type == "function" and inner.name:
                    add(inner, tool.name)
    if not specs:
        return None, names, kinds
    choice = req.tool_choice
    if isinstance(choice, NamedChoice):
        if choice.type not in ("function", "custom"):
            return ToolPlan(tuple(specs)), names, kinds
        if choice.name not in names and choice.name not in kinds:
            raise InvalidRequest("tool_choice.name: must name one of the tools", param="tool_choice.name")
        return ToolPlan(tuple(specs), "required", forced=choice.name), names, kinds
    return ToolPlan(tuple(specs), choice or "auto"), names, kinds


def custom_spec(tool: Tool) -> ToolSpec:
    return freeform_tool(str(tool.name), tool.description or "", tool.format)


def to_turns(items: list[Item], field: str) -> list[Turn]:
    """Input items as turns: messages, function calls (joined to the assistant turn before them)
    and their outputs. Reasoning items are dropped: claude.ai cannot take thinking back."""
    turns: list[Turn] = []
    names: dict[str, str] = {}
    for i, item in enumerate(items):
        where = f"{field}.{i}"
        if item.type == "message":
            if item.role is None:
                raise InvalidRequest(f"{where}.role: a message needs a role", param=f"{where}.role")
            turns.append(Turn(ROLES[item.role], _parts(item.content, f"{where}.content")))  # type: ignore[arg-type]
        elif item.type == "function_call":
            name = f"{item.namespace}.{item.name}" if item.namespace else str(item.name or "")
            names[item.call_id or ""] = name
            arguments = item.arguments if isinstance(item.arguments, str) else json.dumps(item.arguments or {})
            call = PastCall(item.call_id or "", name, arguments)
            if turns and turns[-1].role == "assistant":
                turns[-1].calls.append(call)
            else:
                turns.append(Turn("assistant", calls=[call]))
        elif item.type in ("custom_tool_call", "tool_search_call"):
            name = str(item.name or "") if item.type == "custom_tool_call" else TOOL_SEARCH
            names[item.call_id or ""] = name
            given = {"input": item.input or ""} if item.type == "custom_tool_call" else item.arguments or {}
            call = PastCall(item.call_id or "", name, given if isinstance(given, str) else json.dumps(given))
            if turns and turns[-1].role == "assistant":
                turns[-1].calls.append(call)
            else:
                turns.append(Turn("assistant", calls=[call]))
        elif item.type == "tool_search_output":
            loaded = "\n".join(f"- {t.get('name', '')}: {t.get('description', '')}" for t in item.tools or [])
            turns.append(Turn("tool", [TextPart(f"Tools loaded:\n{loaded}")], call_id=item.call_id, name=TOOL_SEARCH))
        elif item.type in ("function_call_output", "custom_tool_call_output"):
            parts = _parts(item.output, f"{where}.output")
            turns.append(Turn("tool", parts, call_id=item.call_id, name=names.get(item.call_id or "")))
        elif item.type == "item_reference":
            continue  # replaced by the item it names before the turns are read again (`recall`)
    return turns


def _parts(content: str | list[WirePart] | None, where: str) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)]
    return [p for j, part in enumerate(content) if (p := _part(part, f"{where}.{j}")) is not None]


def _part(part: WirePart, where: str) -> Part | None:
    if part.type in TEXT_PARTS:
        return TextPart(part.text or "")
    if part.type == "input_image":
        if not part.image_url:
            raise InvalidRequest(
                f"{where}.image_url: send the image as a data: or http(s) URL (file ids are not supported)",
                param=f"{where}.image_url",
            )
        return media_part(part.image_url, f"{where}.image_url")
    if part.type == "input_file":
        if not part.file_data:
            raise InvalidRequest(
                f"{where}.file_data: send the file inline (file ids and URLs are not supported)", param=f"{where}.file_data"
            )
        name = part.filename or "document"
        if part.file_data.startswith("data:"):
            return media_part(part.file_data, f"{where}.file_data", filename=name)
        return FilePart(
            f"{where}.file_data", name, "application/octet-stream", decode_base64(part.file_data, f"{where}.file_data")
        )
    if part.type == "refusal":
        return None
    raise InvalidRequest(f"{where}.type: unsupported content part {part.type!r}", param=f"{where}.type")
