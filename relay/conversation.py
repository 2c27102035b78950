"""The neutral request every client API is parsed into: turns made of parts, tools, and options.

Client-API adapters build a `Chat`; the service turns it into a claude.ai prompt and fallbacks
rebuild other providers' requests from it. Nothing here knows a wire format.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from .errors import InvalidRequest

Role = Literal["system", "user", "assistant", "tool"]
Choice = Literal["auto", "required", "none"]
Effort = Literal["low", "medium", "high", "max"]

_DATA_URL = re.compile(r"^data:([\w.+\-]+/[\w.+\-]+)?((?:;[\w\-]+=[^;,]*)*)(;base64)?,(.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image the client sent inline (`data`) or linked (`url`); `where` names the client's field."""

    where: str
    data: bytes | None = None
    media_type: str = ""
    url: str | None = None


@dataclass(frozen=True, slots=True)
class FilePart:
    """A file the client sent inline: a PDF is uploaded, a text file goes along as text."""

    where: str
    name: str
    media_type: str
    data: bytes


Part = TextPart | ImagePart | FilePart


@dataclass(frozen=True, slots=True)
class PastCall:
    """A tool call the assistant made earlier in the conversation; `arguments` is JSON object text."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Turn:
    """One message. Tool results are turns of role `tool` naming the call they answer."""

    role: Role
    parts: list[Part] = field(default_factory=list)
    calls: list[PastCall] = field(default_factory=list)
    call_id: str | None = None
    name: str | None = None
    is_error: bool = False

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.parts if isinstance(p, TextPart))


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the client offers the model."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    # Declared with defer_loading: offered only once the client has loaded it (a tool_reference).
    deferred: bool = False
    # `strict: true`: a call's arguments are checked against `parameters` before the client sees it.
    strict: bool = False

    def loaded_note(self) -> str:
        """The tool as a tool_reference loads it into the conversation: what the model needs to
        call it from then on."""
        schema = orjson.dumps(self.parameters or {"type": "object", "properties": {}}).decode()
        desc = f" - {self.description}" if self.description else ""
        return f"[tool loaded] {self.name}{desc}\n  parameters (JSON schema): {schema}"

    @property
    def required(self) -> list[str]:
        req = self.parameters.get("required")
        return [str(r) for r in req] if isinstance(req, list) else []


def freeform_tool(name: str, description: str, fmt: dict[str, Any] | None) -> ToolSpec:
    """A freeform (`custom`) tool as the model is offered one: its raw text goes in one string
    argument, `input`, following the tool's grammar when it has one (Codex's apply_patch)."""
    fmt = fmt or {}
    grammar = f" It must follow this {fmt.get('syntax', '')} grammar:\n{fmt['definition']}" if fmt.get("definition") else ""
    about = f"The raw text this tool takes.{grammar}"
    parameters = {"type": "object", "properties": {"input": {"type": "string", "description": about}}, "required": ["input"]}
    return ToolSpec(name, description, parameters)


def freeform_input(arguments: str) -> str:
    """The raw text of a freeform tool's call (its `input` argument)."""
    args = parse_arguments(arguments)
    return args["input"] if isinstance(args, dict) and isinstance(args.get("input"), str) else arguments


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """The tools offered for one request and what the caller demands of them."""

    tools: tuple[ToolSpec, ...]
    choice: Choice = "auto"
    forced: str | None = None  # a tool the model must call
    loaded: frozenset[str] = frozenset()  # deferred tools the conversation has loaded

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.choice != "none"

    @property
    def offered(self) -> tuple[ToolSpec, ...]:
        """The tools described to the model: every one not deferred, and deferred ones once
        loaded. A call to any declared tool is still a call."""
        return tuple(t for t in self.tools if not t.deferred or t.name in self.loaded)


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """A structured answer the client asked for: any JSON object (`schema` None), or one that
    matches `schema` (JSON Schema)."""

    schema: dict[str, Any] | None = None
    name: str = "output"


def output_format(kind: str, schema: dict[str, Any] | None, name: str | None, field: str) -> OutputFormat | None:
    """A client API's structured-output request as an OutputFormat; None for plain text."""
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat(None, name or "output")
    if kind == "json_schema":
        if not isinstance(schema, dict):
            raise InvalidRequest(f"{field}.schema: a JSON Schema object is required", param=f"{field}.schema")
        return OutputFormat(schema, name or "output")
    raise InvalidRequest(f"{field}.type: must be text, json_object or json_schema", param=f"{field}.type")


@dataclass(slots=True)
class Chat:
    """One chat request as any client API expresses it."""

    model: str  # as the client named it
    turns: list[Turn]
    stream: bool = False
    tools: ToolPlan | None = None
    stops: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    thinking: bool = False
    effort: Effort | None = None
    web_search: bool = False  # claude.ai's web search, for this conversation only
    output: OutputFormat | None = None  # a structured answer: JSON, checked before the client sees it


# No real request nests deeper; a limit keeps every later step (validation, prompt building,
# JSON encoding) far from recursion limits.
MAX_JSON_DEPTH = 64


def too_deep(doc: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether decoded JSON nests more than `limit` containers deep (checked without recursion)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def parse_arguments(text: str) -> Any | None:
    """A tool call's JSON arguments, or None when they are not JSON a relay can safely handle."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return None if too_deep(doc) else doc


def effort_of(name: str | None) -> Effort | None:
    """A client's reasoning effort as claude.ai's: none and minimal ask for no extended thinking."""
    return {"low": "low", "medium": "medium", "high": "high", "xhigh": "max", "max": "max"}.get(name or "")  # type: ignore[return-value]


def name_tool_results(turns: list[Turn]) -> None:
    """Give each tool result that came without a name the name of the call it answers (clients
    send only the call's id; the model should see which tool spoke)."""
    names: dict[str, str] = {}
    for turn in turns:
        for call in turn.calls:
            names[call.id] = call.name
        if turn.role == "tool" and not turn.name and turn.call_id in names:
            turn.name = names[turn.call_id]


def require_content(turns: list[Turn], field: str) -> None:
    """A conversation with nothing in it is the client's mistake, not a question for claude.ai."""
    if not any(t.calls or t.role == "tool" or any(not isinstance(p, TextPart) or p.text.strip() for p in t.parts) for t in turns):
        raise InvalidRequest(f"{field}: every message is empty", param=field)


def decode_data_url(url: str, where: str) -> tuple[str, bytes]:
    """(media type, bytes) of a `data:` URL; a malformed one or bad base64 is a 400 naming the field."""
    match = _DATA_URL.match(url)
    if not match:
        raise InvalidRequest(f"{where}: malformed data: URL", param=where)
    media, _, is_b64, payload = match.groups()
    if not is_b64:
        return media or "text/plain", payload.encode()
    return media or "application/octet-stream", decode_base64(payload, where)


def decode_base64(payload: str, where: str) -> bytes:
    try:
        return base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}: base64 data does not decode", param=where) from None


def media_part(url: str, where: str, *, filename: str | None = None) -> ImagePart | FilePart:
    """An image or file given as a `data:` URL (or, for images, an http(s) URL)."""
    if url.startswith(("http://", "https://")) and filename is None:
        return ImagePart(where, url=url)
    if not url.startswith("data:"):
        raise InvalidRequest(f"{where}: must be a data: URL or an http(s) URL", param=where)
    media, data = decode_data_url(url, where)
    if filename is None or media.startswith("image/"):
        return ImagePart(where, data=data, media_type=media)
    return FilePart(where, filename, media, data)
