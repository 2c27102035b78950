"""The admin API (`/v1/admin`, `/hf/v1/admin`): an aiohttp sub-app with its own key (ADMIN_KEY,
else APIKEY; never open) and pydantic request bodies. Adds, checks and removes accounts, makes and
revokes named client keys and sets their limits and budgets."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ..chat.service import ChatService
from ..claude.client import UpstreamClient
from ..claude.failures import UpstreamFailure
from ..client_api import validate
from ..config import SessionSpec, first_problem
from ..errors import AuthError, Conflict, NotFound, Unprocessable
from ..pool.account import Account
from ..pool.budgets import Budgets, Spent
from ..pool.client_keys import ClientKey, ClientKeys
from ..pool.history import UsageHistory
from ..pool.pool import AccountPool
from .admin_bulk import BulkAccounts, require_cookies_kept
from .admin_usage import UsageApi
from .body import BodyLimits, read_json
from .middlewares import bearer

Limit = Annotated[int, Field(ge=1, strict=True)]


class AddAccount(BaseModel):
    """POST /admin/accounts: a cookie, and optionally its org id and its own proxy."""

    session_key: Annotated[str, Field(description="a claude.ai sessionKey cookie (sk-ant-sid01-... or sk-ant-sid02-...)")]
    org_id: str | None = None
    proxy: str | None = None


class KeySettings(BaseModel):
    """A named key's limits and token budgets (None: none)."""

    rpm: Limit | None = None
    concurrency: Limit | None = None
    models: list[str] | None = None
    daily_tokens: Limit | None = None
    monthly_tokens: Limit | None = None


class AddKey(KeySettings):
    """POST /admin/keys: a named client key with optional limits and budgets."""

    model_config = ConfigDict(extra="ignore")

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._\-]{1,64}$")]


class EditKey(KeySettings):
    """PATCH /admin/keys/{name}: the settings given are changed (null removes one), the rest kept."""

    model_config = ConfigDict(extra="forbid")


def admin_auth(admin_key: str, api_key: str) -> Middleware:
    """ADMIN_KEY (else APIKEY) on every admin route; with neither set, the routes stay closed."""
    expected = (admin_key or api_key).encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not expected:  # never open, not even with --insecure-no-auth
            raise AuthError("admin routes need ADMIN_KEY (or APIKEY) to be set", code="admin_disabled")
        given = bearer(request).encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            raise AuthError("admin routes take ADMIN_KEY" if admin_key else "incorrect API key", code="invalid_admin_key")
        return await handler(request)

    return middleware


class AdminApi:
    """The admin routes, with what they change passed in."""

    def __init__(
        self, pool: AccountPool, service: ChatService, upstream: UpstreamClient, keys: ClientKeys, history: UsageHistory
    ) -> None:
        self.limits = BodyLimits.of(service.settings)
        self.usage = UsageApi(history, pool.now)
        # Full cookies are exported only when the admin routes have a key of their own.
        self.bulk = BulkAccounts(pool, service, upstream, full_export=bool(service.settings.admin_key.get_secret_value()))
        self.pool = pool
        self.service = service
        self.keys = keys

    def app(self, admin_key: str, api_key: str) -> web.Application:
        """A sub-app to mount under an API prefix's `/admin`."""
        app = web.Application(middlewares=[admin_auth(admin_key, api_key)])
        app.router.add_routes(
            [
                web.post("/accounts", self.add_account),
                web.post("/accounts/import", self.bulk.import_accounts),
                web.get("/accounts/export", self.bulk.export_accounts),
                web.delete("/accounts/{alias}", self.remove_account),
                web.post("/accounts/{alias}/check", self.check_account),
                web.post("/keys", self.add_key),
                web.get("/keys", self.list_keys),
                web.patch("/keys/{name}", self.edit_key),
                web.delete("/keys/{name}", self.remove_key),
                web.get("/usage", self.usage.usage),
            ]
        )
        return app

    async def add_account(self, request: web.Request) -> web.Response:
        """Check a cookie against claude.ai, then add it to the pool."""
        body = validate(AddAccount, await read_json(request, self.limits))
        try:
            spec = SessionSpec.model_validate({"key": body.session_key.strip(), "org_id": body.org_id, "proxy": body.proxy})
        except ValidationError as exc:
            field, message = first_problem(exc)
            raise Unprocessable(message, param="proxy" if field == "proxy" else "session_key") from None
        key = spec.key.get_secret_value()
        if self.pool.has_key(key):
            raise Conflict("this sessionKey is already in the pool", param="session_key")
        require_cookies_kept(self.pool)
        try:
            found = await self.bulk.probe(spec)
        except UpstreamFailure as failure:
            message = f"claude.ai refused this sessionKey: {failure.message}"
            raise Unprocessable(message, param="session_key", code="session_key_refused") from None
        if self.pool.has_key(key):  # added meanwhile by a concurrent request
            raise Conflict("this sessionKey is already in the pool", param="session_key")
        account = await self.pool.add(spec.model_copy(update={"org_id": spec.org_id or found}))
        self.service.discover_orgs()
        return web.json_response(account.view(), status=201)

    def _account(self, request: web.Request, *, retiring_ok: bool = True) -> Account:
        """The account a route's {alias} names, or a 404."""
        alias = request.match_info["alias"]
        account = self.pool.find(alias)
        if account is None or (account.retiring and not retiring_ok):
            raise NotFound(f"no account {alias!r}; GET /v1/accounts lists them", code="account_not_found")
        return account

    async def remove_account(self, request: web.Request) -> web.Response:
        """No new request gets the account; it leaves once its streams end."""
        account = self._account(request, retiring_ok=False)
        self.service.spawn(self.pool.retire(account))
        body = {"alias": account.alias, "key": account.masked, "removing": True, "in_flight": account.in_flight_here}
        return web.json_response(body, status=202)

    async def check_account(self, request: web.Request) -> web.Response:
        """Ask claude.ai about the account now."""
        account = self._account(request)
        await self.pool.check(account, self.service.api(account))
        return web.json_response(account.view())

    async def add_key(self, request: web.Request) -> web.Response:
        """A named client key with optional limits; the key itself is shown only here."""
        body = validate(AddKey, await read_json(request, self.limits))
        store = self.pool.store
        keys = await self.keys.sync(store)
        if keys.named(body.name) is not None:
            raise Conflict(f"a key named {body.name!r} exists", param="name")
        secret = keys.create(body.name, body.model_dump(exclude={"name"}))
        await keys.save(store)
        made = keys.named(body.name)
        assert made is not None
        return web.json_response({**_view(made, await self._spent()), "key": secret}, status=201)

    async def _spent(self) -> Spent:
        return await Budgets(self.pool.store.tallies).spent(self.pool.now())

    async def list_keys(self, request: web.Request) -> web.Response:
        keys = await self.keys.sync(self.pool.store)
        spent = await self._spent()  # one read for every key
        return web.json_response({"object": "list", "data": [_view(k, spent) for k in keys.keys]})

    async def edit_key(self, request: web.Request) -> web.Response:
        """Change a key's limits or budgets; it keeps its secret and what it has spent."""
        name = request.match_info["name"]
        body = validate(EditKey, await read_json(request, self.limits))
        keys = await self.keys.sync(self.pool.store)
        key = keys.named(name)
        if key is None:
            raise NotFound(f"no key named {name!r}", code="key_not_found")
        if key.source == "file":
            raise Conflict(f"key {name!r} comes from CLIENT_KEYS; change it there", code="key_from_file")
        key.apply(body.model_dump(include=body.model_fields_set))
        await keys.save(self.pool.store)
        return web.json_response(_view(key, await self._spent()))

    async def remove_key(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        keys = await self.keys.sync(self.pool.store)
        if not keys.delete(name):
            raise NotFound(f"no key named {name!r}", code="key_not_found")
        await keys.save(self.pool.store)
        return web.json_response({"name": name, "deleted": True})


def _view(key: ClientKey, spent: Spent) -> dict[str, Any]:
    """A key as listed: its settings, this replica's counters and what is left of its budgets."""
    view = key.view()
    view["budget"] = {**view["budget"], **spent.view(key.budget)}
    return view
