"""POST /v1/messages and /v1/messages/count_tokens: the Anthropic Messages API over the same pool."""

from __future__ import annotations

from aiohttp import web

from .anthropic_format import AnthropicStream, collect_message
from .anthropic_models import CountTokensRequest, MessagesRequest, thinking_requested, to_messages, tool_plan
from .chat_view import make_job, prompt_tokens
from .keys import access_key, guest_key, service_key, settings_key
from .models import parse_request
from .reply import estimate_tokens
from .streaming import run_stream, served
from .tools import instructions
from .views import read_json


async def messages(request: web.Request) -> web.StreamResponse:
    settings = request.app[settings_key]
    service = request.app[service_key]
    req = parse_request(MessagesRequest, await read_json(request))
    access = request[access_key]
    access.model = req.model
    job = make_job(request, req.model, to_messages(req), tool_plan(req.tools, req.tool_choice), thinking_requested(req))
    stops = req.stop_sequences or []
    access.tokens_in = prompt_tokens(job)
    guest = request.get(guest_key)
    if req.stream:
        fmt = AnthropicStream(req.model, stops, prompt_tokens(job))
        return await run_stream(request, service, job, guest, fmt, settings.heartbeat_interval)
    async with service.open(job, guest=guest, buffered=True) as reply:
        served(access, reply)
        body = collect_message(reply.head, req.model, stops, prompt_tokens(job))
    access.outcome = "done"
    access.tokens_out = body["usage"]["output_tokens"]
    return web.json_response(body)


async def count_tokens(request: web.Request) -> web.Response:
    """An estimate (about four characters a token) of what the request would send."""
    req = parse_request(CountTokensRequest, await read_json(request))
    text = "\n".join(f"{m.content}" for m in to_messages(req))
    plan = tool_plan(req.tools, None)
    if plan is not None:
        text += instructions(plan)
    return web.json_response({"input_tokens": estimate_tokens(len(text))})
