"""Small handlers: health, models, and the account pool's view and reload."""

from __future__ import annotations

import re
import time
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..claude.failures import UpstreamFailure
from ..config import THINK_SUFFIX, ConfigError, SessionSpec
from ..errors import Conflict, InvalidRequest, NotFound, Unprocessable
from ..pool.account import Account
from .body import read_json
from .keys import client_keys_key, metrics_key, pool_key, reload_key, service_key, settings_key, upstream_key

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
            "keys": [k.view() for k in request.app[client_keys_key].keys],
        }
    )


async def status_page(_: web.Request) -> web.Response:
    """The status page: static HTML that asks for the API key, then reads /stats."""
    return web.Response(text=STATUS_PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})


async def add_account(request: web.Request) -> web.Response:
    """POST /v1/admin/accounts: check a cookie against claude.ai, then add it to the pool."""
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("session_key"), str):
        raise InvalidRequest("session_key: a claude.ai sessionKey cookie (sk-ant-sid01-...) is required", param="session_key")
    org, proxy = body.get("org_id"), body.get("proxy")
    if org is not None and not isinstance(org, str) or proxy is not None and not isinstance(proxy, str):
        raise InvalidRequest("org_id and proxy must be strings", param="org_id" if not isinstance(org, str) else "proxy")
    entry = body["session_key"].strip() + (f":{org}" if org else "") + (f"@{proxy}" if proxy else "")
    try:
        spec = SessionSpec.parse(entry)
    except ValueError as exc:
        raise Unprocessable(str(exc), param="proxy" if "proxy" in str(exc) else "session_key") from None
    pool, service = request.app[pool_key], request.app[service_key]
    key = spec.key.get_secret_value()
    if pool.has_key(key):
        raise Conflict("this sessionKey is already in the pool", param="session_key")
    probe = request.app[upstream_key].for_key(key, proxy=spec.proxy.get_secret_value() if spec.proxy else None)
    try:
        found = await probe.discover_org()
    except UpstreamFailure as failure:
        raise Unprocessable(
            f"claude.ai refused this sessionKey: {failure.message}", param="session_key", code="session_key_refused"
        ) from None
    if pool.has_key(key):  # added meanwhile by a concurrent request
        raise Conflict("this sessionKey is already in the pool", param="session_key")
    account = await pool.add(spec.model_copy(update={"org_id": spec.org_id or found}))
    service.warm_up()
    return web.json_response(account.view(), status=201)


def _account(request: web.Request, *, retiring_ok: bool = True) -> Account:
    """The account a route's {alias} names, or a 404."""
    account = request.app[pool_key].find(request.match_info["alias"])
    if account is None or (account.retiring and not retiring_ok):
        raise NotFound(f"no account {request.match_info['alias']!r}; GET /v1/accounts lists them", code="account_not_found")
    return account


async def remove_account(request: web.Request) -> web.Response:
    """DELETE /v1/admin/accounts/{alias}: no new request gets it; it leaves once its streams end."""
    pool = request.app[pool_key]
    account = _account(request, retiring_ok=False)
    request.app[service_key].spawn(pool.retire(account))
    return web.json_response(
        {"alias": account.alias, "key": account.masked, "removing": True, "in_flight": account.in_flight}, status=202
    )


async def check_account(request: web.Request) -> web.Response:
    """POST /v1/admin/accounts/{alias}/check: ask claude.ai about the account now."""
    account = _account(request)
    await request.app[pool_key].check(account, request.app[service_key].api(account))
    return web.json_response(account.view())


async def add_key(request: web.Request) -> web.Response:
    """POST /v1/admin/keys: a named client key with optional limits; the key is shown only here."""
    body = await read_json(request)
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidRequest("name: 1-64 letters, digits, '.', '_' or '-'", param="name")
    limits: dict[str, Any] = {}
    for field in ("rpm", "concurrency"):
        value = body.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InvalidRequest(f"{field}: a whole number of at least 1", param=field)
        limits[field] = value
    models = body.get("models")
    if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) for m in models)):
        raise InvalidRequest("models: a list of model names", param="models")
    store = request.app[pool_key].store
    keys = await request.app[client_keys_key].sync(store)
    if keys.named(name) is not None:
        raise Conflict(f"a key named {name!r} exists", param="name")
    secret = keys.create(name, limits["rpm"], limits["concurrency"], models)
    await keys.save(store)
    return web.json_response({**keys.named(name).view(), "key": secret}, status=201)  # type: ignore[union-attr]


async def list_keys(request: web.Request) -> web.Response:
    keys = await request.app[client_keys_key].sync(request.app[pool_key].store)
    return web.json_response({"object": "list", "data": [k.view() for k in keys.keys]})


async def remove_key(request: web.Request) -> web.Response:
    store = request.app[pool_key].store
    keys = await request.app[client_keys_key].sync(store)
    if not keys.delete(request.match_info["name"]):
        raise NotFound(f"no key named {request.match_info['name']!r}", code="key_not_found")
    await keys.save(store)
    return web.json_response({"name": request.match_info["name"], "deleted": True})
