"""create_app(): pure assembly of the relay's objects, routes and middlewares; resources are
started and closed in cleanup contexts, one per resource, in dependency order."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable
from functools import partial

from aiohttp import web

from ..apis import CLIENT_APIS, ClientApiSpec
from ..chat.service import ChatService
from ..claude.client import upstream_client
from ..claude.images import fetch_image
from ..config import SessionSpec, Settings, load_settings
from ..fallback import Fallbacks
from ..metrics import Metrics
from ..pool.client_keys import ClientKeys
from ..pool.history import UsageHistory
from ..pool.pool import AccountPool
from ..pool.sealing import Sealer
from ..pool.state import MemoryStore, StateStore
from . import views
from .admin import AdminApi
from .delivery import Delivery
from .endpoints import ApiEndpoint
from .keys import (
    client_keys_key,
    fallbacks_key,
    history_key,
    metrics_key,
    pool_key,
    reload_key,
    service_key,
    settings_key,
    streams_key,
    upstream_key,
)
from .live_stream import LiveStream
from .middlewares import add_headers, auth_middleware, error_middleware
from .serve import HANDLER_OPTIONS

API_PREFIXES = ("/v1", "/hf/v1")
# Routes for the operator only (APIKEY or ADMIN_KEY; never a named client key), under each prefix.
OPERATOR_PATHS = ("/accounts", "/accounts/reload")


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[upstream_key].close()


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """Accounts and client keys as the state store has them; the store closed last."""
    pool, settings = app[pool_key], app[settings_key]
    await pool.start()
    keys = await app[client_keys_key].sync(pool.store)
    if settings.client_keys:
        keys.load_file(settings.client_keys)
    yield
    await pool.store.close()


async def _service_ctx(app: web.Application) -> AsyncIterator[None]:
    service = app[service_key]
    service.discover_orgs()
    service.usage.start()
    service.sweeper.start()
    yield
    await service.close()


async def _fallbacks_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[fallbacks_key].close()


async def _stop_streams(app: web.Application) -> None:
    """Give live streams a grace period, then stop the rest (each sends one error frame)."""
    ended = {s.ended: s for s in app[streams_key]}
    if not ended:
        return
    _, pending = await asyncio.wait(ended, timeout=app[settings_key].shutdown_grace)
    for waiter in pending:
        ended[waiter].stop()
    if pending:
        await asyncio.wait(pending, timeout=2)


def _state_store(settings: Settings) -> StateStore:
    """In-process state (kept in STATE_FILE if set), or Redis shared by replicas when STATE_URL is set."""
    secret = settings.state_secret.get_secret_value()
    sealer = Sealer(secret) if secret else None
    local = MemoryStore(settings.state_file, answer_ttl=settings.response_ttl, sealer=sealer, plaintext=settings.state_plaintext)
    if not settings.state_url:
        return local
    from ..pool.redis_store import RedisStore  # redis is imported only when it is used (6 MB)

    return RedisStore(settings.state_url, prefix=settings.state_prefix, lease_seconds=settings.state_lease_seconds, local=local)


def create_app(
    settings: Settings,
    *,
    reload_sessions: Callable[[], tuple[SessionSpec, ...]] | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The relay as an aiohttp application; no I/O happens until it starts."""
    pool = AccountPool(settings.sessions, _state_store(settings), clock, dead_after=settings.dead_account_ttl)
    keys = ClientKeys(settings.state_secret.get_secret_value())
    streams = weakref.WeakSet[LiveStream]()
    metrics = Metrics(pool, lambda: len(streams), lambda: keys.keys)
    upstream = upstream_client(settings)
    image = partial(fetch_image, upstream, allow_private=settings.image_fetch_private)
    service = ChatService(upstream, pool, settings, metrics=metrics, fetch_image=image)
    fallbacks = Fallbacks(settings.fallbacks, metrics)
    delivery = Delivery(service, fallbacks, settings, streams)
    history = UsageHistory(pool.store.tallies, settings.usage_history_days)

    mirror = settings.mirror_api_prefix if settings.enable_mirror_api else None
    auth = auth_middleware(
        settings.apikey.get_secret_value(),
        mirror,
        metrics_public=settings.metrics_public,
        keys=keys,
        store=pool.store,
        admin_key=settings.admin_key.get_secret_value(),
        operator_paths=frozenset(p + path for p in API_PREFIXES for path in OPERATOR_PATHS),
    )
    app = web.Application(
        middlewares=[error_middleware, auth], client_max_size=settings.max_body_size, handler_args=HANDLER_OPTIONS
    )
    app[settings_key], app[pool_key], app[client_keys_key], app[streams_key] = settings, pool, keys, streams
    app[metrics_key], app[upstream_key], app[service_key], app[fallbacks_key] = metrics, upstream, service, fallbacks
    app[reload_key] = reload_sessions or (lambda: load_settings().sessions)
    app[history_key] = history
    app.cleanup_ctx.extend([_upstream_ctx, _pool_ctx, _service_ctx, _fallbacks_ctx])
    app.on_response_prepare.append(add_headers)
    app.on_shutdown.append(_stop_streams)

    app.router.add_routes(_plain_routes())
    endpoints = [(spec, ApiEndpoint(spec.make(settings), service, delivery, pool.store, keys)) for spec in CLIENT_APIS]
    admin = AdminApi(pool, service, upstream, keys, history)
    for base in API_PREFIXES:
        app.router.add_routes(_api_routes(base, endpoints))
        app.router.add_routes(_pool_routes(base))
        app.add_subapp(base + "/admin", admin.app(settings.admin_key.get_secret_value(), settings.apikey.get_secret_value()))
        if mirror:
            app.router.add_routes(_api_routes(mirror + base, endpoints))
    return app


def _plain_routes() -> list[web.RouteDef]:
    """Health, monitoring, the status page, and the probe Claude Code sends before it starts."""
    return [
        web.get("/health", views.health),
        web.get("/metrics", views.metrics),
        web.get("/stats", views.stats),
        web.get("/", views.status_page),
        web.get("/api/hello", views.hello),  # aiohttp answers HEAD on GET routes too
    ]


def _api_routes(prefix: str, endpoints: list[tuple[ClientApiSpec, ApiEndpoint]]) -> list[web.RouteDef]:
    """One prefix's client-API routes, from the registry, and the model list."""
    routes = [web.get(f"{prefix}/models", views.list_models), web.get(f"{prefix}/models/{{model}}", views.get_model)]
    for spec, endpoint in endpoints:
        routes.append(web.post(prefix + spec.path, endpoint.chat))
        if spec.count_path:
            routes.append(web.post(prefix + spec.count_path, endpoint.count_tokens))
    return routes


def _pool_routes(prefix: str) -> list[web.RouteDef]:
    """The operator's view of the pool (never on the mirror prefix)."""
    accounts, reload = OPERATOR_PATHS
    return [web.get(prefix + accounts, views.list_accounts), web.post(prefix + reload, views.reload_accounts)]
