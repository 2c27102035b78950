"""A client API's endpoints, bound to its adapter and to what they use (as aiohttp-demos'
`SiteHandler`): parse the wire request, build the job, then deliver whole or streamed."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

from aiohttp import web

from ..chat.service import ChatService
from ..client_api import ClientApi
from ..fallback import Ask
from ..pool.client_keys import ClientKeys
from ..pool.state import StateStore
from .body import BodyLimits, read_json
from .delivery import Delivery, Order
from .keys import access_key, client_key, guest_key


class ApiEndpoint:
    """The chat (and token-count) endpoint of one client API."""

    def __init__(
        self, api: ClientApi[Any], service: ChatService, delivery: Delivery, store: StateStore, client_keys: ClientKeys
    ) -> None:
        self.api = api
        self.service = service
        self.delivery = delivery
        self.store = store  # kept answers (the Responses API's memory) and key limits
        self.client_keys = client_keys
        self.limits = BodyLimits.of(service.settings)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """Parse, build the job, then stream or answer whole."""
        api = self.api
        parsed = api.parse(await read_json(request, self.limits))
        access = request[access_key]
        access.model = parsed.chat.model
        named = request.get(client_key)
        ticket = await self.client_keys.admit(named, parsed.chat.model, self.store) if named is not None else None
        scope = _scope(request)
        memory = OwnedAnswers(self.store, scope)
        try:
            await api.recall(parsed, memory)
            job = self.service.job(parsed.chat, scope)
            access.tokens_in = job.prompt_tokens
            renderer = api.renderer(parsed, job.prompt_tokens)
            ask = Ask(api.wire, parsed.body, dataclasses.replace(parsed.chat, thinking=job.thinking))
            remember = functools.partial(api.remember, parsed, renderer, memory)
            order = Order(job, ask, request.get(guest_key), access, remember)
            if parsed.chat.stream:
                return await self.delivery.stream(request, order, renderer)
            return await self.delivery.complete(order, renderer)
        finally:
            if named is not None and ticket is not None:
                spent_in = access.tokens_in if access.account else 0  # a prompt nobody answered cost nothing
                await self.client_keys.release(named, ticket, self.store, spent_in, access.tokens_out)

    async def count_tokens(self, request: web.Request) -> web.Response:
        """An estimate (about four characters a token) of the prompt the request would send."""
        job = self.service.job(self.api.parse_count(await read_json(request, self.limits)))
        return web.json_response({"input_tokens": job.prompt_tokens})


class OwnedAnswers:
    """Kept answers as their owner sees them: each is kept under its owner's scope, so an id
    that another client key (or mirror-mode cookie) was given is not found, like OpenAI's
    `previous_response_id` across projects."""

    __slots__ = ("prefix", "store")

    def __init__(self, store: StateStore, scope: str) -> None:
        self.store = store
        self.prefix = hashlib.sha256(scope.encode()).hexdigest()[:16] + ":"

    async def load_answer(self, answer_id: str) -> bytes | None:
        return await self.store.load_answer(self.prefix + answer_id)

    async def keep_answer(self, answer_id: str, data: bytes) -> None:
        await self.store.keep_answer(self.prefix + answer_id, data)


def _scope(request: web.Request) -> str:
    """Whose conversation this is: sessions are never shared between client keys, nor between
    mirror-mode cookies and the pool."""
    if guest_key in request:
        return "guest:" + hashlib.sha256(request[guest_key].key.get_secret_value().encode()).hexdigest()
    if client_key in request:
        return "key:" + request[client_key].hash
    return "key:apikey"


def endpoint_of(request: web.Request) -> ApiEndpoint | None:
    """The client-API endpoint a request was routed to (its errors take that API's shape)."""
    owner = getattr(request.match_info.handler, "__self__", None)
    return owner if isinstance(owner, ApiEndpoint) else None
