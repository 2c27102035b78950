"""Request ids, authentication, and the one place where errors become HTTP answers."""

from __future__ import annotations

import asyncio
import hmac
import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from loguru import logger

from ..config import SessionSpec
from ..errors import AuthError, InvalidRequest, MethodNotAllowed, NotFound, PayloadTooLarge, PermissionDenied, RelayError
from ..logs import printable
from ..pool.client_keys import ClientKeys
from ..pool.state import StateStore
from .access import AccessLog
from .endpoints import endpoint_of
from .keys import access_key, client_key, guest_key, history_key, metrics_key, pool_key, settings_key

# A client's own request id is kept when it is a plain token; anything else (spaces, control
# characters, quotes) could forge log lines or break the response header, so it is replaced.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")

# What the access log and metrics say for a request whose client left before its answer was
# complete (nginx's code for it); no client ever sees it.
CLIENT_GONE = 499


def bearer(request: web.Request) -> str:
    """The key a request came with: `Authorization: Bearer` (OpenAI) or `x-api-key` (Anthropic)."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key", "").strip()


def _is_api(path: str, prefix: str = "") -> bool:
    return path.startswith((f"{prefix}/v1/", f"{prefix}/hf/v1/"))


def auth_middleware(
    apikey: str,
    mirror_prefix: str | None,
    *,
    metrics_public: bool,
    keys: ClientKeys,
    store: StateStore,
    admin_key: str = "",
    operator_paths: frozenset[str] = frozenset(),
) -> Middleware:
    """APIKEY (or a named client key) on /v1, /hf/v1, /stats and /metrics; only APIKEY or
    ADMIN_KEY on the operator's routes (`operator_paths`: the pool's view and reload); in mirror
    mode the caller's own sessionKey on the mirror prefix. The admin sub-app checks its own key."""
    expected = apikey.encode()
    operators = [k.encode() for k in (apikey, admin_key) if k]
    private = ("/stats",) if metrics_public else ("/stats", "/metrics")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if len(request.match_info.apps) > 1:
            pass  # a sub-app's route (the admin API): its own middleware checks its own key
        elif path in operator_paths and operators:
            await _operator_only(request, operators, keys, store)
        elif mirror_prefix and _is_api(path, mirror_prefix):
            request[guest_key] = _guest(request)
        elif expected and (_is_api(path) or path in private):
            # Headers are decoded with surrogateescape: bytes that are not UTF-8 still compare (and fail).
            token = bearer(request)
            given = token.encode("utf-8", "surrogateescape")
            if not given:
                raise AuthError("missing API key: send Authorization: Bearer <APIKEY>")
            if not hmac.compare_digest(given, expected):
                named = await keys.lookup(token, store) if _is_api(path) else None
                if named is None:
                    raise AuthError("incorrect API key")
                request[client_key] = named
        return await handler(request)

    return middleware


async def _operator_only(request: web.Request, operators: list[bytes], keys: ClientKeys, store: StateStore) -> None:
    """APIKEY or ADMIN_KEY; a named client key is known but not allowed here (403)."""
    given = bearer(request).encode("utf-8", "surrogateescape")
    matches = [hmac.compare_digest(given, k) for k in operators]  # every comparison made: constant time
    if any(matches):
        return
    if await keys.lookup(bearer(request), store) is not None:
        raise PermissionDenied("the operator's routes take APIKEY or ADMIN_KEY, not a named key", code="operator_only")
    raise AuthError("incorrect API key")


def _guest(request: web.Request) -> SessionSpec:
    """Mirror mode: the caller's own claude.ai sessionKey, with no proxy of its choosing."""
    try:
        spec = SessionSpec.parse(bearer(request))
        if spec.proxy is not None:  # a caller must not choose where the relay connects
            raise ValueError("no proxy in mirror keys")
    except ValueError:
        message = "mirror routes take your own claude.ai sessionKey (sk-ant-sid01-... or sk-ant-sid02-...) as the bearer token"
        raise AuthError(message, code="invalid_session_key") from None
    return spec


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id and access log for every request; RelayError and HTTP errors as OpenAI JSON."""
    given = request.headers.get("x-request-id", "")
    request_id = given if CLIENT_REQUEST_ID.fullmatch(given) else f"req_{uuid.uuid4().hex}"
    access = request[access_key] = AccessLog(request_id, time.monotonic())
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except RelayError as exc:
        status = exc.status
        return error_response(request, exc)
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        return error_response(request, _http_error(exc))
    except asyncio.CancelledError:
        access.outcome = "client_gone"
        raise
    except ConnectionError:
        # The client hung up while its answer was being written: nobody is left to answer, and
        # aiohttp drops the response quietly. Not an error of the relay's.
        access.outcome = "client_gone"
        return web.Response(status=CLIENT_GONE)
    except Exception:  # noqa: BLE001 - the one place any bug becomes a 500, logged with its traceback
        logger.exception("unhandled error in {} {}", request.method, request.path)
        return error_response(request, RelayError("internal error; see the relay's log"))
    finally:
        _account_for(request, access, CLIENT_GONE if access.outcome == "client_gone" else status)


def _model_label(request: web.Request, access: AccessLog) -> str:
    """The model label only for requests that reached claude.ai."""
    return _model_name(request, access.model) if access.account else "-"


def _model_name(request: web.Request, model: str) -> str:
    """Configured models by name; anything else a client typed is "other", so labels stay few."""
    return model if model in request.app[settings_key].served_models else "other"


def _account_for(request: web.Request, access: AccessLog, status: int) -> None:
    """One log line and the request metrics; the model label only for requests that reached claude.ai."""
    duration = time.monotonic() - access.started
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics = request.app[metrics_key]
    metrics.requests.labels(route, _model_label(request, access), str(status)).inc()
    metrics.duration.labels(route).observe(duration)
    if access.ttfb_ms is not None:
        metrics.ttfb.labels(route).observe(access.ttfb_ms / 1000)
    if access.tokens_in or access.tokens_out:
        metrics.tokens.labels("in").inc(access.tokens_in)
        metrics.tokens.labels("out").inc(access.tokens_out)
    logger.bind(request_id=access.request_id, status=status, route=route, duration_ms=round(duration * 1000)).info(
        "{} {} {} {:.0f}ms {} rid={}",
        printable(request.method),
        printable(request.path),
        status,
        duration * 1000,
        access.fields(),
        access.request_id,
    )
    _record_usage(request, access, status)


def _record_usage(request: web.Request, access: AccessLog, status: int) -> None:
    """Chat requests into the usage history, by key, account and model (the model even when no
    account answered; "-" when the request named none)."""
    endpoint = endpoint_of(request)
    if endpoint is None or request.match_info.handler != endpoint.chat:
        return
    if guest_key in request:
        key = "(mirror)"
    else:
        key = request[client_key].name if client_key in request else "(apikey)"
    model = _model_name(request, access.model) if access.model else "-"
    error = access.outcome == "failed" or (status >= 400 and status != CLIENT_GONE)
    tokens = (access.tokens_in if access.account else 0, access.tokens_out)  # a prompt nobody answered cost nothing
    request.app[history_key].record(
        request.app[pool_key].now(), key, access.account, model, tokens=tokens, error=error, ttft_ms=access.ttfb_ms
    )


def error_response(request: web.Request, exc: RelayError) -> web.Response:
    """The error in the shape of the client API served on this path (OpenAI's elsewhere)."""
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    endpoint = endpoint_of(request)
    body = endpoint.api.error_body(exc) if endpoint is not None else exc.body()
    return web.json_response(body, status=exc.status, headers=headers)


def _http_error(exc: web.HTTPException) -> RelayError:
    """aiohttp's own errors (404, 405, 413) in the same JSON shape."""
    if exc.status == 404:
        return NotFound("unknown route; see GET /v1/models and POST /v1/chat/completions")
    if exc.status == 405:
        return MethodNotAllowed(f"{exc.method if hasattr(exc, 'method') else 'this method'} is not allowed here")
    if exc.status == 413:
        return PayloadTooLarge("request body is too large (see MAX_BODY_SIZE)")
    return InvalidRequest(exc.reason or "bad request")


# Every answer: no browser guesses another content type, and no page may frame relay's (the
# status page takes the API key: a framing page could trick a click).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, streams included, carries the request id and the
    security headers."""
    response.headers.update(SECURITY_HEADERS)
    if access_key in request:
        response.headers["x-request-id"] = request[access_key].request_id
