"""The route table: each client API's endpoints, served by one generic chat handler."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..chat_api.adapter import ChatCompletions
from ..client_api import ClientApi
from ..config import Settings
from ..fallback import Ask
from ..messages_api.adapter import Messages
from ..responses_api.adapter import Responses
from . import views
from .body import read_json
from .delivery import Delivery, complete, stream
from .keys import access_key, apis_key, client_key, client_keys_key, guest_key, pool_key, service_key
from .middlewares import Handler


def _api(request: web.Request) -> ClientApi[Any]:
    return request.app[apis_key][request.match_info.route.resource.canonical]  # type: ignore[union-attr]


async def chat(request: web.Request) -> web.StreamResponse:
    """Any client API's chat endpoint: parse, build the job, then stream or answer whole."""
    api = _api(request)
    parsed = api.parse(await read_json(request))
    access = request[access_key]
    access.model = parsed.chat.model
    named = request.get(client_key)
    if named is not None:
        request.app[client_keys_key].admit(named, parsed.chat.model)
    try:
        memory = request.app[pool_key].store
        await api.recall(parsed, memory)
        job = request.app[service_key].job(parsed.chat)
        access.tokens_in = job.prompt_tokens
        renderer = api.renderer(parsed, job.prompt_tokens)
        ask = Ask(api.wire, parsed.body, dataclasses.replace(parsed.chat, thinking=job.thinking))
        keep = functools.partial(api.remember, parsed, renderer, memory)
        delivery = Delivery(request, job, ask, request.get(guest_key), keep)
        if parsed.chat.stream:
            return await stream(delivery, renderer)
        return await complete(delivery, renderer)
    finally:
        if named is not None:
            named.in_flight -= 1
            named.tokens_in += access.tokens_in
            named.tokens_out += access.tokens_out


async def count_tokens(request: web.Request) -> web.Response:
    """An estimate (about four characters a token) of the prompt the request would send."""
    api = _api(request)
    assert isinstance(api, Messages)
    job = request.app[service_key].job(api.parse_count(await read_json(request)))
    return web.json_response({"input_tokens": job.prompt_tokens})


@dataclass(frozen=True, slots=True)
class Apis:
    """The client APIs this relay serves, built once per app from the settings."""

    chat: ChatCompletions
    messages: Messages
    responses: Responses

    @classmethod
    def from_settings(cls, settings: Settings) -> Apis:
        activity = settings.show_tool_activity
        return cls(
            chat=ChatCompletions(settings.thinking_format, activity), messages=Messages(activity), responses=Responses(activity)
        )


def api_routes(prefix: str, apis: Apis, served: dict[str, ClientApi[Any]], *, pool_routes: bool) -> list[web.RouteDef]:
    """One prefix's routes; `served` learns which client API answers on each path."""
    endpoints: list[tuple[str, ClientApi[Any], Handler]] = [
        ("/chat/completions", apis.chat, chat),
        ("/messages", apis.messages, chat),
        ("/messages/count_tokens", apis.messages, count_tokens),
        ("/responses", apis.responses, chat),
    ]
    routes = [web.get(f"{prefix}/models", views.list_models), web.get(f"{prefix}/models/{{model}}", views.get_model)]
    for path, api, handler in endpoints:
        served[prefix + path] = api
        routes.append(web.post(prefix + path, handler))
    if pool_routes:
        routes += [
            web.get(f"{prefix}/accounts", views.list_accounts),
            web.post(f"{prefix}/accounts/reload", views.reload_accounts),
            web.post(f"{prefix}/admin/accounts", views.add_account),
            web.delete(f"{prefix}/admin/accounts/{{alias}}", views.remove_account),
            web.post(f"{prefix}/admin/accounts/{{alias}}/check", views.check_account),
            web.post(f"{prefix}/admin/keys", views.add_key),
            web.get(f"{prefix}/admin/keys", views.list_keys),
            web.delete(f"{prefix}/admin/keys/{{name}}", views.remove_key),
        ]
    return routes
