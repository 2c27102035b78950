"""Anthropic Messages request models; anything a client may send is validated here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from ..client_api import StopSequences


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


class _CustomSpec(_Wire):
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class AnthropicTool(_Wire):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] = {}
    type: str | None = None
    # Some clients nest a custom tool's fields: {"type": "custom", "name", "custom": {...}}.
    custom: _CustomSpec | None = None
    strict: bool | None = None
    defer_loading: bool | None = None  # loaded later through tool search (Claude Code's ToolSearch)
    # Server tools (web_search_*): the limits a client may set.
    max_uses: int | None = Field(default=None, ge=1)
    allowed_domains: list[str] | None = None
    blocked_domains: list[str] | None = None

    @model_validator(mode="after")
    def _lift_custom(self) -> AnthropicTool:
        if self.custom is not None:
            self.description = self.description or self.custom.description
            self.input_schema = self.input_schema or self.custom.input_schema or {}
        return self


class ToolChoice(_Wire):
    type: Literal["auto", "any", "none", "tool"] = "auto"
    name: str | None = None


class ThinkingConfig(_Wire):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None
    # "summarized" (the default) shows the thinking; "omitted" and "updates" ask for thinking
    # blocks without their text (Claude Code sends "omitted").
    display: str | None = None

    @property
    def shown(self) -> bool:
        return self.display not in ("omitted", "updates")


class OutputFormatConfig(_Wire):
    type: Literal["json_schema"]
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class OutputConfig(_Wire):
    effort: Literal["low", "medium", "high", "max"] | None = None
    format: OutputFormatConfig | None = None


class CountTokensRequest(_Wire):
    model: str = Field(min_length=1, max_length=128)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[Block] | None = None
    tools: list[AnthropicTool] | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stream: StrictBool = False
    stop_sequences: StopSequences | None = None
    thinking: ThinkingConfig | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
