"""Quota windows read from /usage in the background, never on a request's path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from loguru import logger

from ..claude.client import AccountApi
from ..claude.failures import UpstreamFailure
from ..pool.account import Account
from ..pool.pool import AccountPool
from .background import BackgroundLoop

# The first round waits for start-up's organization discovery.
USAGE_FIRST_DELAY = 2.0


class UsagePoller(BackgroundLoop):
    """Asks /usage for every account now and then; an account whose windows a stream reported
    recently is not asked, and failing to read quota says nothing about the account."""

    def __init__(self, pool: AccountPool, api: Callable[[Account], AccountApi], every: float) -> None:
        self.pool = pool
        self.api = api
        self.every = every

    async def _run(self) -> None:
        await asyncio.sleep(USAGE_FIRST_DELAY)
        while True:
            for account in self.pool.accounts:
                if self._due(account):
                    await self._read(account)
            await asyncio.sleep(self.every)

    def _due(self, account: Account) -> bool:
        now = self.pool.now()
        recent = account.usage_at is not None and now - account.usage_at < self.every
        return bool(account.org_id) and account.usable(now) and not recent

    async def _read(self, account: Account) -> None:
        assert account.org_id is not None
        try:
            windows = await self.api(account).usage(account.org_id)
        except UpstreamFailure as failure:
            logger.debug("usage of {} not read: {}", account.alias, failure.message)
            return
        if windows:
            await self.pool.record_usage(account, windows)
