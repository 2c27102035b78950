"""Typed application and request keys; nothing else lives here."""

from __future__ import annotations

import weakref
from collections.abc import Callable

from aiohttp import web

from ..chat.service import ChatService
from ..claude.client import UpstreamClient
from ..config import SessionSpec, Settings
from ..fallback import Fallbacks
from ..metrics import Metrics
from ..pool.client_keys import ClientKey, ClientKeys
from ..pool.history import UsageHistory
from ..pool.pool import AccountPool
from .access import AccessLog
from .live_stream import LiveStream

settings_key = web.AppKey("settings", Settings)
pool_key = web.AppKey("pool", AccountPool)
upstream_key = web.AppKey("upstream", UpstreamClient)
service_key = web.AppKey("service", ChatService)
streams_key: web.AppKey[weakref.WeakSet[LiveStream]] = web.AppKey("streams")
metrics_key = web.AppKey("metrics", Metrics)
fallbacks_key = web.AppKey("fallbacks", Fallbacks)
client_keys_key = web.AppKey("client_keys", ClientKeys)
history_key = web.AppKey("history", UsageHistory)
# Re-reads SESSIONS for POST /v1/accounts/reload.
reload_key: web.AppKey[Callable[[], tuple[SessionSpec, ...]]] = web.AppKey("reload")

access_key = web.RequestKey("access", AccessLog)
# The named client key a request came with (absent for APIKEY).
client_key = web.RequestKey("client_key", ClientKey)
guest_key = web.RequestKey("guest", SessionSpec)
