"""OpenAI Chat Completions as a client API: wire request to `Chat`, answers as chunks or a completion."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..client_api import ApiRequest, ClientApi, validate
from ..conversation import (
    Chat,
    OutputFormat,
    Part,
    PastCall,
    TextPart,
    ToolPlan,
    ToolSpec,
    Turn,
    effort_of,
    freeform_tool,
    media_part,
    output_format,
    require_content,
)
from ..errors import InvalidRequest
from ..render import Activity
from .models import AudioPart, ChatRequest, ContentPart, CustomTool, Message, NamedToolChoice, Tool, ToolCall
from .models import FilePart as WireFile
from .models import ImagePart as WireImage
from .render import ChatRenderer, ThinkingFormat

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool", "function": "tool"}


@dataclass(slots=True)
class CompletionRequest(ApiRequest):
    include_usage: bool = False
    freeform: frozenset[str] = frozenset()  # the request's custom (freeform) tools


class ChatCompletions(ClientApi[CompletionRequest]):
    name = "chat.completions"
    wire = "openai"

    def __init__(self, thinking: ThinkingFormat, activity: Activity = "compact") -> None:
        super().__init__(activity)
        self.thinking = thinking

    def parse(self, body: object) -> CompletionRequest:
        req = validate(ChatRequest, body)
        assert isinstance(body, dict)
        turns = [_turn(i, m) for i, m in enumerate(req.messages)]
        require_content(turns, "messages")
        chat = Chat(
            model=req.model,
            turns=turns,
            stream=req.stream,
            tools=tool_plan(req),
            stops=req.stop_sequences,
            max_tokens=req.max_completion_tokens or req.max_tokens,
            web_search=req.web_search_options is not None,
            thinking=effort_of(req.reasoning_effort) is not None,
            effort=effort_of(req.reasoning_effort),
            output=_output(req),
        )
        freeform = frozenset(t.custom.name for t in req.tools or [] if isinstance(t, CustomTool))
        return CompletionRequest(chat, body, bool(req.stream_options and req.stream_options.include_usage), freeform)

    def renderer(self, request: CompletionRequest, prompt_tokens: int) -> ChatRenderer:
        chat = request.chat
        return ChatRenderer(
            chat.model,
            chat.stops,
            prompt_tokens,
            thinking=self.thinking,
            include_usage=request.include_usage,
            keep=not chat.stream,
            activity=self.activity,
            freeform=request.freeform,
        )


def _output(req: ChatRequest) -> OutputFormat | None:
    """`response_format` (json_object, json_schema) as the structured answer to check."""
    fmt = req.response_format
    if fmt is None:
        return None
    schema = fmt.json_schema.schema_ if fmt.json_schema else None
    name = fmt.json_schema.name if fmt.json_schema else None
    if fmt.type == "json_schema" and fmt.json_schema is None:
        raise InvalidRequest("response_format.json_schema: required for type json_schema", param="response_format.json_schema")
    return output_format(fmt.type, schema, name, "response_format.json_schema")


def tool_plan(req: ChatRequest) -> ToolPlan | None:
    """OpenAI `tools` and `tool_choice` as a ToolPlan."""
    if not req.tools:
        return None
    specs = tuple(
        ToolSpec(t.function.name, t.function.description or "", t.function.parameters, strict=bool(t.function.strict))
        if isinstance(t, Tool)
        else freeform_tool(t.custom.name, t.custom.description or "", t.custom.format)
        for t in req.tools
    )
    choice = req.tool_choice
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in {t.name for t in specs}:
            raise InvalidRequest("tool_choice.function.name: must name one of the tools", param="tool_choice.function.name")
        return ToolPlan(specs, "required", forced=choice.function.name)
    return ToolPlan(specs, choice or "auto")


def _turn(i: int, msg: Message) -> Turn:
    content = msg.content
    if isinstance(content, str):
        parts: list[Part] = [TextPart(content)]
    else:
        parts = [_part(p, f"messages.{i}.content.{j}") for j, p in enumerate(content or [])]
    calls = [
        PastCall(c.id, c.function.name, c.function.arguments)
        if isinstance(c, ToolCall)
        else PastCall(c.id, c.custom.name, json.dumps({"input": c.custom.input}))
        for c in msg.tool_calls or []
    ]
    return Turn(ROLES[msg.role], parts, calls, call_id=msg.tool_call_id, name=msg.name)  # type: ignore[arg-type]


def _part(part: ContentPart, where: str) -> Part:
    if isinstance(part, WireImage):
        return media_part(part.image_url.url, f"{where}.image_url.url")
    if isinstance(part, WireFile):
        if not part.file.file_data:
            raise InvalidRequest(f"{where}.file: only inline file_data is supported, not file_id", param=f"{where}.file")
        return media_part(part.file.file_data, f"{where}.file.file_data", filename=part.file.filename or "document")
    if isinstance(part, AudioPart):
        raise InvalidRequest(f"{where}: input_audio parts are not supported", param=where)
    return TextPart(part.text)
