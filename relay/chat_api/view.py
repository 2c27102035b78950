"""POST /v1/chat/completions: OpenAI requests in, OpenAI chunks or a completion out."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..server.delivery import Delivery, complete, stream
from ..fallback import Ask
from ..server.keys import access_key, guest_key, settings_key
from ..errors import InvalidRequest
from .models import ChatRequest, Message, parse_request
from .render import OpenAIStream, collect_completion
from ..claude.prompt import build_prompt
from ..reply import ReplyEvent, estimate_tokens
from ..service import ChatJob
from ..claude.tools import ToolPlan, ToolSpec
from ..server.views import read_json, resolve_model


def tool_plan(req: ChatRequest) -> ToolPlan | None:
    """OpenAI `tools` and `tool_choice` as a ToolPlan."""
    if not req.tools:
        return None
    specs = tuple(ToolSpec(t.function.name, t.function.description or "", t.function.parameters) for t in req.tools)
    choice = req.tool_choice
    if choice in (None, "auto"):
        return ToolPlan(specs)
    if choice in ("none", "required"):
        return ToolPlan(specs, choice)
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not name or name not in {t.name for t in specs}:
        raise InvalidRequest("tool_choice: must be none, auto, required or a declared function", param="tool_choice")
    return ToolPlan(specs, "required", forced=name)


def make_job(request: web.Request, model_name: str, messages: list[Message], tools: ToolPlan | None, thinking: bool = False) -> ChatJob:
    """A ChatJob from an already-normalised conversation; shared by both client APIs."""
    settings = request.app[settings_key]
    model, think_model = resolve_model(settings, model_name)
    prompt = build_prompt(
        messages,
        no_role_prefix=settings.no_role_prefix,
        disable_artifacts=settings.prompt_disable_artifacts or bool(tools and tools.active),
        max_history=settings.max_chat_history_length,
        tools=tools,
    )
    artifacts = not settings.prompt_disable_artifacts and not (tools and tools.active)
    return ChatJob(model=model, thinking=thinking or think_model, prompt=prompt, artifacts=artifacts, tools=tools)


def prompt_tokens(job: ChatJob) -> int:
    """Estimated input tokens: the prompt and its text attachments."""
    return estimate_tokens(len(job.prompt.text) + sum(len(a.content) for a in job.prompt.attachments))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    settings = request.app[settings_key]
    req = parse_request(ChatRequest, await read_json(request))
    access = request[access_key]
    access.model = req.model
    plan = tool_plan(req)
    job = make_job(request, req.model, req.messages, plan)
    access.tokens_in = prompt_tokens(job)
    ask = Ask(
        "openai",
        req.model_dump(exclude_none=True),
        req.model,
        req.messages,
        plan,
        req.stream,
        req.stop_sequences,
        req.max_completion_tokens or req.max_tokens,
        job.thinking,
    )
    delivery = Delivery(request, job, ask, request.get(guest_key))
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return await stream(delivery, OpenAIStream(req.model, settings.thinking_format, req.stop_sequences, include_usage, access.tokens_in))

    def collect(events: list[ReplyEvent]) -> dict[str, Any]:
        body = collect_completion(events, req.model, settings.thinking_format, req.stop_sequences, access.tokens_in)
        access.tokens_out = body["usage"]["completion_tokens"]
        return body

    return await complete(delivery, collect)
