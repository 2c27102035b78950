"""OpenAI Responses request models. Fields relay cannot use are accepted and ignored; the few that
would silently change the meaning of an answer are refused by the adapter."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class _Wire(BaseModel):
    # Codex CLI sends prompt_cache_key, client_metadata, include, ...: accept, ignore.
    model_config = ConfigDict(extra="ignore")


class Part(_Wire):
    """A content part of an input message; which fields matter depends on `type`."""

    type: str
    text: str | None = None
    image_url: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    file_id: str | None = None
    filename: str | None = None


class Item(_Wire):
    """An input item: a message, a function call or its output, a reasoning item, ..."""

    type: str = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[Part] | None = None
    call_id: str | None = None
    name: str | None = None
    namespace: str | None = None
    arguments: str | dict[str, Any] | None = None  # an object in tool_search_call
    output: str | list[Part] | None = None
    input: str | None = None  # custom_tool_call: the raw text the tool takes
    tools: list[dict[str, Any]] | None = None  # tool_search_output: the tools it loaded


class FunctionTool(_Wire):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Wire):
    """Any tool; functions (also inside a `namespace`) are offered to the model, hosted tools are not."""

    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    tools: list[FunctionTool | Tool] | None = None
    external_web_access: bool | None = None  # web_search
    filters: dict[str, Any] | None = None  # web_search
    format: dict[str, Any] | None = None  # custom: the input's grammar or "text"
    strict: bool | None = None  # function: check the arguments against the parameters
    execution: str | None = None  # tool_search: "client" when the client runs it


class NamedChoice(_Wire):
    type: str
    name: str | None = None


class Reasoning(_Wire):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: str | None = None


class TextFormat(_Wire):
    type: str = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextOptions(_Wire):
    format: TextFormat | None = None


class ResponsesRequest(_Wire):
    model: str = Field(min_length=1, max_length=128)
    input: str | list[Item]
    instructions: str | None = None
    stream: StrictBool = False
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=128)
    store: StrictBool = True
    background: StrictBool = False
    text: TextOptions | None = None
    metadata: dict[str, Any] | None = None
    temperature: float | None = None
