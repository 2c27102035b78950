"""Small handlers: health, models, and the account pool's view and reload."""

from __future__ import annotations

import re
import time
from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..claude.drift import DRIFT
from ..config import THINK_SUFFIX, ConfigError
from ..errors import InvalidRequest
from .keys import client_keys_key, metrics_key, pool_key, reload_key, service_key, settings_key

NAME = re.compile(r"[A-Za-z0-9._\-]{1,64}")
# Anthropic model objects carry a release time; relay does not know one, so it says the epoch.
MODELS_CREATED = "1970-01-01T00:00:00Z"
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


async def hello(_: web.Request) -> web.Response:
    """`HEAD /api/hello`: Claude Code checks that the API answers before its first request."""
    return web.json_response({"message": "hello"})


def _display_name(model: str) -> str:
    """`claude-sonnet-4-6-think` -> `Claude Sonnet 4.6 (thinking)`."""
    base = model.removesuffix(THINK_SUFFIX)
    words: list[str] = []
    version: list[str] = []
    for part in base.split("-"):
        (version if part.isdigit() and len(part) < 3 else words).append(part)
    name = " ".join(w.capitalize() for w in words if not (w.isdigit() and len(w) == 8))
    return f"{name} {'.'.join(version)}".strip() + (" (thinking)" if model.endswith(THINK_SUFFIX) else "")


def _model_object(request: web.Request, model: str) -> dict[str, object]:
    """A model as the caller's API describes one: Anthropic's when it sent `anthropic-version`."""
    if "anthropic-version" in request.headers:
        return {"type": "model", "id": model, "display_name": _display_name(model), "created_at": MODELS_CREATED}
    return {"id": model, "object": "model", "created": 0, "owned_by": "anthropic"}


async def list_models(request: web.Request) -> web.Response:
    """The served models; Anthropic's paged list shape for Anthropic clients (Claude Code)."""
    names = list(request.app[settings_key].served_models)
    if "anthropic-version" not in request.headers:
        return web.json_response({"object": "list", "data": [_model_object(request, n) for n in names]})
    query = request.query
    if after := query.get("after_id"):
        names = names[names.index(after) + 1 :] if after in names else []
    if before := query.get("before_id"):
        names = names[: names.index(before)] if before in names else []
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit: must be a whole number from 1 to 1000", param="limit")
    page = names[:limit]
    return web.json_response(
        {
            "data": [_model_object(request, n) for n in page],
            "has_more": len(names) > limit,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
    )


async def get_model(request: web.Request) -> web.Response:
    """One model by id: any served name, or any other `claude-*` name relay would pass on."""
    model = request.match_info["model"]
    request.app[service_key].resolve_model(model)  # a 404 for names that are not served
    return web.json_response(_model_object(request, model))


async def list_accounts(request: web.Request) -> web.Response:
    pool = request.app[pool_key]
    await pool.refresh()  # the shared view when replicas share state
    await request.app[service_key].sweeper.count()
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
    request.app[service_key].discover_orgs()
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
    await request.app[service_key].sweeper.count()
    accounts = pool.current()
    return web.json_response(
        {
            "uptime_seconds": int(now - m.started),
            "now": now,
            "metrics": m.snapshot(),
            "accounts": [a.view() for a in accounts],
            "keys": [k.view() for k in request.app[client_keys_key].keys],
            "upstream_unknown": [u.view() for u in DRIFT.entries()],
        }
    )


async def status_page(_: web.Request) -> web.Response:
    """The status page: static HTML that asks for the API key, then reads /stats."""
    return web.Response(text=STATUS_PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})
