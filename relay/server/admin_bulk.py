"""Accounts in bulk: import many cookies at once (lines of `key[:org][@proxy]`, or the JSON the
export writes), each checked against claude.ai concurrently with one result per entry; export
with masked cookies, or full ones only when asked for and ADMIN_KEY is set."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from aiohttp import web
from loguru import logger
from pydantic import BaseModel, ConfigDict, ValidationError

from ..chat.service import ChatService
from ..claude.client import UpstreamClient
from ..claude.failures import UpstreamFailure
from ..client_api import validate
from ..config import SessionSpec, shown_proxy
from ..errors import Conflict, InvalidRequest, PermissionDenied
from ..pool.account import mask_key
from ..pool.pool import AccountPool
from .body import BodyLimits, read_body, read_json

# Entries per import, at most; a bigger list is split by the operator.
MAX_IMPORT = 1000
# Cookies checked against claude.ai at once during an import.
IMPORT_CONCURRENCY = 8
Outcome = Literal["added", "exists", "refused", "invalid"]


class ExportedAccount(BaseModel):
    """One account as the export writes it (and the import reads it back)."""

    model_config = ConfigDict(extra="ignore")

    session_key: str
    org_id: str | None = None
    proxy: str | None = None


class ImportBody(BaseModel):
    """POST /admin/accounts/import as JSON: `text` (one cookie per line) or `accounts` (an export)."""

    model_config = ConfigDict(extra="ignore")

    text: str | None = None
    accounts: list[ExportedAccount] | None = None


async def entries_of(request: web.Request, limits: BodyLimits) -> list[tuple[int, str | ExportedAccount]]:
    """(entry number, line or exported account) from a text or JSON body; blank lines and `#`
    comments skipped."""
    if request.content_type == "application/json":
        body = validate(ImportBody, await read_json(request, limits))
        if body.accounts is not None:
            return list(enumerate(body.accounts, 1))
        text = body.text or ""
    else:
        text = (await read_body(request, limits)).decode("utf-8", "replace")
    numbered = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    entries: list[tuple[int, str | ExportedAccount]] = [(n, line) for n, line in numbered if line and not line.startswith("#")]
    if not entries:
        raise InvalidRequest("nothing to import: send one cookie per line (key[:org][@proxy]) or an export's JSON")
    return entries


def require_cookies_kept(pool: AccountPool) -> None:
    """An added account is kept with its cookie: refuse (409) where the store would keep it in the clear."""
    if refused := pool.store.secrets_refused:
        message = f"an added account is kept with its cookie, and {refused}: set STATE_SECRET (or STATE_PLAINTEXT=true)"
        raise Conflict(message, code="state_secret_required")


def spec_of(entry: str | ExportedAccount) -> SessionSpec:
    """The account an entry names; ValueError with a plain message when it names none."""
    if isinstance(entry, str):
        return SessionSpec.parse(entry)
    if "..." in entry.session_key:
        raise ValueError("this cookie is masked: export with ?full=true to move accounts")
    try:
        return SessionSpec.model_validate({"key": entry.session_key, "org_id": entry.org_id, "proxy": entry.proxy})
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


class BulkAccounts:
    """The import and export routes."""

    def __init__(self, pool: AccountPool, service: ChatService, upstream: UpstreamClient, full_export: bool) -> None:
        self.pool = pool
        self.service = service
        self.upstream = upstream
        self.full_export = full_export  # ADMIN_KEY is set: full cookies may be exported
        self.limits = BodyLimits.of(service.settings)

    async def probe(self, spec: SessionSpec) -> str:
        """The cookie's organization id as claude.ai gives it; UpstreamFailure when refused."""
        probe = self.upstream.for_key(spec.key.get_secret_value(), proxy=spec.proxy.get_secret_value() if spec.proxy else None)
        return await probe.discover_org()

    async def import_accounts(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        entries = await entries_of(request, self.limits)
        if len(entries) > MAX_IMPORT:
            raise InvalidRequest(f"at most {MAX_IMPORT} accounts per import; split the list")
        require_cookies_kept(self.pool)
        gate = asyncio.Semaphore(IMPORT_CONCURRENCY)
        seen: set[str] = set()
        results = await asyncio.gather(*(self._one(n, entry, gate, seen) for n, entry in entries))
        accepted = [spec for _, spec in results if spec is not None]
        if accepted:
            await self.pool.add_many(accepted)
            self.service.discover_orgs()
        for result, spec in results:
            if spec is not None and (account := self.pool.holding(spec.key.get_secret_value())) is not None:
                result["alias"] = account.alias
        counts = {k: sum(1 for r, _ in results if r["status"] == k) for k in ("added", "exists", "refused", "invalid")}
        logger.info("import: {} ({:.1f} s)", ", ".join(f"{n} {k}" for k, n in counts.items() if n), time.monotonic() - started)
        return web.json_response({"object": "import", "counts": counts, "results": [r for r, _ in results]})

    async def _one(
        self, n: int, entry: str | ExportedAccount, gate: asyncio.Semaphore, seen: set[str]
    ) -> tuple[dict[str, Any], SessionSpec | None]:
        """One entry's result, and its account when it is to be added."""
        try:
            spec = spec_of(entry)
        except ValueError as exc:
            return {"entry": n, "key": None, "status": "invalid", "message": str(exc)}, None
        key = spec.key.get_secret_value()
        result: dict[str, Any] = {"entry": n, "key": mask_key(key)}
        if key in seen or self.pool.has_key(key):
            return {**result, "status": "exists", "message": "already in the pool"}, None
        seen.add(key)
        async with gate:
            try:
                found = await self.probe(spec)
            except UpstreamFailure as failure:
                return {**result, "status": "refused", "message": f"claude.ai refused it: {failure.message}"}, None
        org = spec.org_id or found
        return {**result, "status": "added", "org_id": org}, spec.model_copy(update={"org_id": org})

    async def export_accounts(self, request: web.Request) -> web.Response:
        full = request.query.get("full", "").lower() in ("1", "true", "yes")
        if full and not self.full_export:
            raise PermissionDenied("full cookies are exported only when ADMIN_KEY is set", code="admin_key_required")
        accounts = []
        for account in self.pool.accounts:
            proxy = account.proxy if full or account.proxy is None else shown_proxy(account.proxy)
            key = account.key if full else account.masked
            entry = {"alias": account.alias, "session_key": key, "org_id": account.org_id, "proxy": proxy}
            accounts.append({**entry, "state": account.state.value})
        if full:
            logger.warning("full export of {} accounts (cookies included)", len(accounts))
        body = {"object": "accounts_export", "full": full, "exported_at": time.time(), "accounts": accounts}
        return web.json_response(body, headers={"Cache-Control": "no-store"})
