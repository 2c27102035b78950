"""Typed application and request keys; nothing else lives here."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..claude.client import UpstreamClient
from ..client_api import ClientApi
from ..config import SessionSpec, Settings
from ..fallback import Fallbacks
from ..logs import printable
from ..metrics import Metrics
from ..pool.client_keys import ClientKey, ClientKeys
from ..pool.pool import AccountPool
from ..service import ChatService
from .live_stream import LiveStream

settings_key = web.AppKey("settings", Settings)
pool_key = web.AppKey("pool", AccountPool)
upstream_key = web.AppKey("upstream", UpstreamClient)
service_key = web.AppKey("service", ChatService)
streams_key = web.AppKey("streams", weakref.WeakSet[LiveStream])
metrics_key = web.AppKey("metrics", Metrics)
fallbacks_key = web.AppKey("fallbacks", Fallbacks)
# Which client API answers on each API path (canonical route path -> adapter).
apis_key = web.AppKey("apis", dict[str, ClientApi[Any]])
# Re-reads SESSIONS for POST /v1/accounts/reload.
reload_key = web.AppKey("reload", Callable[[], tuple[SessionSpec, ...]])


@dataclass(slots=True)
class AccessLog:
    """Filled in by handlers, written as one line per request by the error middleware."""

    request_id: str
    started: float
    model: str = ""
    account: str = ""
    ttfb_ms: float | None = None
    outcome: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    attempts: int = 0

    def fields(self) -> str:
        parts = [f"model={printable(self.model)}" if self.model else "", f"account={self.account}" if self.account else ""]
        if self.attempts > 1:
            parts.append(f"attempts={self.attempts}")
        if self.ttfb_ms is not None:
            parts.append(f"ttfb={self.ttfb_ms:.0f}ms")
        parts.append(f"outcome={self.outcome}" if self.outcome else "")
        return " ".join(p for p in parts if p)


client_keys_key = web.AppKey("client_keys", ClientKeys)
access_key = web.RequestKey("access", AccessLog)
# The named client key a request came with (absent for APIKEY).
client_key = web.RequestKey("client_key", ClientKey)
guest_key = web.RequestKey("guest", SessionSpec)
