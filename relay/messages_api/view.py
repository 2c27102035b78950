"""POST /v1/messages and /v1/messages/count_tokens: the Anthropic Messages API over the same pool."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .render import AnthropicStream, collect_message
from .models import CountTokensRequest, MessagesRequest, thinking_requested, to_messages, tool_plan
from ..chat_api.view import make_job, prompt_tokens
from ..server.delivery import Delivery, complete, stream
from ..fallback import Ask
from ..server.keys import access_key, guest_key
from ..chat_api.models import parse_request
from ..reply import ReplyEvent, estimate_tokens
from ..claude.tools import instructions
from ..server.views import read_json


async def messages(request: web.Request) -> web.StreamResponse:
    req = parse_request(MessagesRequest, await read_json(request))
    access = request[access_key]
    access.model = req.model
    plan = tool_plan(req.tools, req.tool_choice)
    conversation = to_messages(req)
    job = make_job(request, req.model, conversation, plan, thinking_requested(req))
    stops = req.stop_sequences or []
    access.tokens_in = prompt_tokens(job)
    body = req.model_dump(exclude_none=True)
    ask = Ask("anthropic", body, req.model, conversation, plan, req.stream, stops, req.max_tokens, job.thinking)
    delivery = Delivery(request, job, ask, request.get(guest_key))
    if req.stream:
        return await stream(delivery, AnthropicStream(req.model, stops, access.tokens_in))

    def collect(events: list[ReplyEvent]) -> dict[str, Any]:
        message = collect_message(events, req.model, stops, access.tokens_in)
        access.tokens_out = message["usage"]["output_tokens"]
        return message

    return await complete(delivery, collect)


async def count_tokens(request: web.Request) -> web.Response:
    """An estimate (about four characters a token) of what the request would send."""
    req = parse_request(CountTokensRequest, await read_json(request))
    text = "\n".join(f"{m.content}" for m in to_messages(req))
    plan = tool_plan(req.tools, None)
    if plan is not None:
        text += instructions(plan)
    return web.json_response({"input_tokens": estimate_tokens(len(text))})
