"""Small handlers: health, models, and the account pool's view and reload."""

from __future__ import annotations

import time
from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..config import ConfigError
from ..errors import InvalidRequest
from .keys import metrics_key, pool_key, reload_key, service_key, settings_key

STATUS_PAGE = (resources.files("relay") / "static" / "status.html").read_text(encoding="utf-8")


async def health(request: web.Request) -> web.Response:
    """Liveness, usable accounts and the state store's condition; nothing secret."""
    pool = request.app[pool_key]
    now = time.time()
    usable = sum(1 for a in pool.accounts if a.usable(pool.now()))
    problem = pool.store.degraded
    return web.json_response(
        {
            "status": "ok" if usable and not problem else "degraded",
            "accounts": len(pool),
            "usable_accounts": usable,
            "state_store": problem or "ok",
            "uptime_seconds": int(now - request.app[metrics_key].started),
        }
    )


async def list_models(request: web.Request) -> web.Response:
    names = request.app[settings_key].served_models
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "anthropic"} for n in names]
    return web.json_response({"object": "list", "data": data})


async def list_accounts(request: web.Request) -> web.Response:
    pool = request.app[pool_key]
    await pool.refresh()  # the shared view when replicas share state
    return web.json_response({"object": "list", "data": [a.view() for a in pool.current()]})


async def reload_accounts(request: web.Request) -> web.Response:
    """Re-read SESSIONS from the environment and `.env`, keeping what is known about kept accounts."""
    try:
        sessions = request.app[reload_key]()
    except ConfigError as exc:
        raise InvalidRequest(f"reload failed, accounts unchanged: {exc}") from None
    if not sessions:
        raise InvalidRequest("reload failed, accounts unchanged: SESSIONS is empty")
    added, removed = await request.app[pool_key].reload(sessions)
    request.app[service_key].warm_up()
    return web.json_response({"accounts": len(sessions), "added": added, "removed": removed})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = request.app[metrics_key].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def stats(request: web.Request) -> web.Response:
    """The same figures as /metrics, as JSON, with each account (masked) and the uptime."""
    m = request.app[metrics_key]
    now = time.time()
    pool = request.app[pool_key]
    await pool.refresh()
    accounts = pool.current()
    return web.json_response(
        {
            "uptime_seconds": int(now - m.started),
            "now": now,
            "metrics": m.snapshot(),
            "accounts": [a.view() for a in accounts],
        }
    )


async def status_page(_: web.Request) -> web.Response:
    """The status page: static HTML that asks for the API key, then reads /stats."""
    return web.Response(text=STATUS_PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})
