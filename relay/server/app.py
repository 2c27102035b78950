"""create_app(): pure assembly of routes, middlewares and resources (in cleanup contexts)."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable
from functools import partial

from aiohttp import web

from ..claude import curl
from ..claude.client import UpstreamClient, UpstreamConfig
from ..claude.images import fetch_image
from ..config import SessionSpec, Settings, load_settings
from ..fallback import Fallbacks
from ..metrics import Metrics
from ..pool.client_keys import ClientKeys
from ..pool.pool import AccountPool
from ..pool.redis_store import RedisStore
from ..pool.state import MemoryStore, StateStore
from ..service import ChatService
from . import views
from .keys import (
    apis_key,
    client_keys_key,
    fallbacks_key,
    metrics_key,
    pool_key,
    reload_key,
    service_key,
    settings_key,
    streams_key,
    upstream_key,
)
from .live_stream import LiveStream
from .middlewares import add_request_id, auth_middleware, error_middleware
from .routes import Apis, api_routes


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[settings_key]
    curl.shrink_ws_buffer()
    client = UpstreamClient(
        UpstreamConfig(
            base_url=s.claude_base_url,
            proxy=s.proxy,
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            max_connections=s.upstream_max_connections,
        )
    )
    app[upstream_key] = client
    yield
    await client.close()


async def _service_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[settings_key]
    service = ChatService(
        app[upstream_key],
        app[pool_key],
        s,
        metrics=app[metrics_key],
        fetch_image=partial(fetch_image, app[upstream_key], allow_private=s.image_fetch_private),
    )
    app[service_key] = service
    await app[pool_key].start()
    keys = await app[client_keys_key].sync(app[pool_key].store)
    if s.client_keys:
        keys.load_file(s.client_keys)
    service.warm_up()
    service.watch_usage()
    yield
    await service.close()
    await app[pool_key].store.close()


async def _fallbacks_ctx(app: web.Application) -> AsyncIterator[None]:
    fallbacks = Fallbacks(app[settings_key].fallbacks, app[metrics_key])
    app[fallbacks_key] = fallbacks
    yield
    await fallbacks.close()


async def _stop_streams(app: web.Application) -> None:
    """Give live streams a grace period, then cut the rest (each sends one error frame)."""
    live = list(app[streams_key])
    tasks = {s.task for s in live if s.task is not None and not s.task.done()}
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=app[settings_key].shutdown_grace)
    for stream in live:
        if stream.task in pending:
            stream.shutting_down = True
            stream.task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=2)


def _state_store(settings: Settings) -> StateStore:
    """In-process state (kept in STATE_FILE if set), or Redis shared by replicas when STATE_URL is set."""
    local = MemoryStore(settings.state_file, answer_ttl=settings.response_ttl)
    if not settings.state_url:
        return local
    return RedisStore(settings.state_url, prefix=settings.state_prefix, lease_seconds=settings.state_lease_seconds, local=local)


def create_app(
    settings: Settings,
    *,
    reload_sessions: Callable[[], tuple[SessionSpec, ...]] | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The relay as an aiohttp application; no I/O happens until it starts."""
    mirror = settings.mirror_api_prefix if settings.enable_mirror_api else None
    app = web.Application(
        middlewares=[
            error_middleware,
            auth_middleware(
                settings.apikey.get_secret_value(),
                mirror,
                metrics_public=settings.metrics_public,
                admin_key=settings.admin_key.get_secret_value(),
            ),
        ],
        client_max_size=settings.max_body_size,
    )
    app[settings_key] = settings
    app[pool_key] = AccountPool(settings.sessions, _state_store(settings), clock)
    app[client_keys_key] = ClientKeys()
    app[streams_key] = weakref.WeakSet[LiveStream]()
    app[metrics_key] = Metrics(app[pool_key], lambda: len(app[streams_key]), lambda: app[client_keys_key].keys)
    app[reload_key] = reload_sessions or (lambda: load_settings().sessions)
    app.cleanup_ctx.extend([_upstream_ctx, _service_ctx, _fallbacks_ctx])
    app.on_response_prepare.append(add_request_id)
    app.on_shutdown.append(_stop_streams)

    app.router.add_get("/health", views.health)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/stats", views.stats)
    app.router.add_get("/", views.status_page)
    apis = Apis.from_settings(settings)
    app[apis_key] = {}
    for base in ("/v1", "/hf/v1"):
        app.router.add_routes(api_routes(base, apis, app[apis_key], pool_routes=True))
        if mirror:
            app.router.add_routes(api_routes(mirror + base, apis, app[apis_key], pool_routes=False))
    return app
