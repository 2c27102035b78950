"""Deleting the chats of idle sessions: every kept chat unused for SESSION_TTL (each by exactly
one replica), and at shutdown every kept chat when sessions do not outlive the process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from loguru import logger

from ..claude.client import AccountApi, UpstreamClient
from ..config import Settings
from ..metrics import Metrics
from ..pool.account import Account
from ..pool.pool import AccountPool
from ..pool.sessions import KeptChat
from .background import BackgroundLoop
from .completion import ChatRecord
from .deletion import delete_chat
from .sessions import Sessions

# How often idle chats are looked for, at most (a quarter of SESSION_TTL when that is shorter).
SWEEP_EVERY = 60.0


class SessionSweeper(BackgroundLoop):
    """The background loop that ends idle sessions, and the count of open ones per account."""

    def __init__(
        self,
        pool: AccountPool,
        sessions: Sessions,
        upstream: UpstreamClient,
        api: Callable[[Account], AccountApi],
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.pool = pool
        self.sessions = sessions
        self.upstream = upstream
        self.api = api
        self.settings = settings
        self.metrics = metrics

    async def stop(self) -> None:
        """Stop sweeping; chats of sessions that end with this process are deleted now."""
        await super().stop()
        if not self.pool.store.keeps_sessions:
            await self.sweep(float("inf"))

    async def _run(self) -> None:
        every = max(0.05, min(SWEEP_EVERY, self.settings.session_ttl / 4))
        while True:
            await asyncio.sleep(every)
            try:
                await self.sweep(time.time() - self.settings.session_ttl)
                await self.count()
            except Exception:  # noqa: BLE001 - housekeeping must outlive a bad round; the next one tries again
                logger.exception("sweeping idle sessions failed")

    async def sweep(self, before: float) -> int:
        """Delete the chats idle since `before`; returns how many sessions ended."""
        chats = await self.pool.store.expired_chats(before)
        if self.settings.chat_delete:
            await asyncio.gather(*(self._delete(chat) for chat in chats))
        if chats:
            logger.debug("{} idle session(s) ended", len(chats))
        return len(chats)

    async def _delete(self, chat: KeptChat) -> None:
        api, alias = self._owner(chat.account)
        if api is None or not chat.org:
            logger.debug("chat {} of an ended session has no account here to delete it", chat.conv)
            return
        await delete_chat(api, alias, chat.org, ChatRecord(chat.conv, settled=True), self.metrics)

    def _owner(self, account: str) -> tuple[AccountApi | None, str]:
        """claude.ai calls for the session's account: a pooled one, or a mirror-mode cookie still known."""
        if key := self.sessions.guest_keys.get(account):
            return self.upstream.for_key(key, guest=True), "mirror"
        found = next((a for a in self.pool.accounts if a.id == account), None)
        return (self.api(found), found.alias) if found is not None else (None, "")

    async def count(self) -> None:
        """Open sessions per account, for /v1/accounts, the status page and /metrics."""
        counts = await self.pool.store.open_sessions([a.id for a in self.pool.accounts])
        for account in self.pool.accounts:
            account.open_sessions = counts.get(account.id, 0)
