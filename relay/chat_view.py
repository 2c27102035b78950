"""POST /v1/chat/completions: OpenAI requests in, OpenAI chunks or a completion out."""

from __future__ import annotations

from aiohttp import web

from .keys import access_key, guest_key, service_key, settings_key
from .models import ChatRequest, parse_request
from .openai_format import OpenAIStream, collect_completion
from .prompt import build_prompt
from .reply import estimate_tokens
from .service import ChatJob
from .streaming import run_stream, served
from .views import read_json, resolve_model


def _job(request: web.Request, req: ChatRequest) -> ChatJob:
    settings = request.app[settings_key]
    model, thinking = resolve_model(settings, req.model)
    prompt = build_prompt(
        req.messages,
        no_role_prefix=settings.no_role_prefix,
        disable_artifacts=settings.prompt_disable_artifacts,
        max_history=settings.max_chat_history_length,
    )
    return ChatJob(model=model, thinking=thinking, prompt=prompt, artifacts=not settings.prompt_disable_artifacts)


def prompt_tokens(job: ChatJob) -> int:
    """Estimated input tokens: the prompt and its text attachments."""
    return estimate_tokens(len(job.prompt.text) + sum(len(a.content) for a in job.prompt.attachments))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    settings = request.app[settings_key]
    service = request.app[service_key]
    req = parse_request(ChatRequest, await read_json(request))
    access = request[access_key]
    access.model = req.model
    job = _job(request, req)
    guest = request.get(guest_key)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        fmt = OpenAIStream(req.model, settings.thinking_format, req.stop_sequences, include_usage, prompt_tokens(job))
        return await run_stream(request, service, job, guest, fmt, settings.heartbeat_interval)
    async with service.open(job, guest=guest, buffered=True) as reply:
        served(access, reply)
        body = collect_completion(reply.head, req.model, settings.thinking_format, req.stop_sequences, prompt_tokens(job))
    access.outcome = "done"
    return web.json_response(body)
