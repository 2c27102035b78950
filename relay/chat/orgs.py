"""Organization discovery: once per key however many requests ask at the same time, and a bounded
cache of the orgs of callers' own keys (mirror mode)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from ..claude.client import AccountApi

# Mirror keys get cached org ids too, but a bounded number of them.
MAX_GUEST_ORGS = 256


class OrgDiscovery:
    """`GET /api/organizations` for a key, shared by every request that needs it meanwhile."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._guests: OrderedDict[str, str] = OrderedDict()

    async def discover(self, key: str, api: AccountApi) -> str:
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(api.discover_org())
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    async def for_guest(self, key: str, api: AccountApi) -> str:
        """A caller's own key: its org from the bounded cache, else discovered and cached."""
        if cached := self._guests.get(key):
            self._guests.move_to_end(key)
            return cached
        org = self._guests[key] = await self.discover(key, api)
        while len(self._guests) > MAX_GUEST_ORGS:
            self._guests.popitem(last=False)
        return org
