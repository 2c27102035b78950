"""OpenAI Chat Completions request models; anything a client may send is validated here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from ..client_api import StopSequences


class _Wire(BaseModel):
    # Clients send many optional OpenAI fields relay cannot honour (seed, logprobs, ...): accept, ignore.
    model_config = ConfigDict(extra="ignore")


class TextPart(_Wire):
    type: Literal["text"]
    text: str


class ImageURL(_Wire):
    url: str = Field(min_length=1)
    detail: str | None = None


class ImagePart(_Wire):
    type: Literal["image_url"]
    image_url: ImageURL


class FileData(_Wire):
    file_data: str | None = None
    filename: str | None = None
    file_id: str | None = None


class FilePart(_Wire):
    type: Literal["file"]
    file: FileData


class AudioPart(_Wire):
    type: Literal["input_audio"]
    input_audio: dict[str, Any] = {}


ContentPart = Annotated[TextPart | ImagePart | FilePart | AudioPart, Field(discriminator="type")]


class FunctionCall(_Wire):
    name: str
    arguments: str = "{}"


class ToolCall(_Wire):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class CustomInput(_Wire):
    name: str
    input: str = ""


class CustomCall(_Wire):
    """A call to a freeform tool: its raw text."""

    id: str = ""
    type: Literal["custom"]
    custom: CustomInput


class Message(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall | CustomCall] | None = None


class FunctionDef(_Wire):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    description: str | None = None
    parameters: dict[str, Any] = {}
    strict: bool | None = None


class Tool(_Wire):
    type: Literal["function"]
    function: FunctionDef


class CustomDef(_Wire):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    description: str | None = None
    format: dict[str, Any] | None = None


class CustomTool(_Wire):
    """A freeform tool: it takes raw text (following a grammar when it has one), not JSON."""

    type: Literal["custom"]
    custom: CustomDef


class FunctionName(_Wire):
    name: str


class NamedToolChoice(_Wire):
    type: Literal["function"] = "function"
    function: FunctionName


class StreamOptions(_Wire):
    include_usage: bool = False


class JsonSchemaFormat(_Wire):
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatRequest(_Wire):
    model: str = Field(min_length=1, max_length=128)
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool = False
    response_format: ResponseFormat | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=1)
    stop: StopSequences | None = None
    tools: list[Tool | CustomTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    web_search_options: dict[str, Any] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: object) -> object:
        """OpenAI takes one stop sequence as a plain string."""
        return [value] if isinstance(value, str) else value

    @property
    def stop_sequences(self) -> list[str]:
        return [s for s in self.stop or [] if s]
