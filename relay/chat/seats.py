"""Where the account for each attempt comes from, and what is learned from its failures: the pool,
or (mirror mode) the caller's own key."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from ..claude.client import AccountApi, UpstreamClient
from ..claude.failures import Failure, UpstreamFailure
from ..config import SessionSpec
from ..errors import AuthError, InvalidRequest, RateLimited, RelayError, UpstreamError, UpstreamTimeout
from ..pool.account import Account
from ..pool.pool import AccountPool
from ..pool.state import Lease
from ..reply import Window
from .orgs import OrgDiscovery

Failures = list[tuple[Account, UpstreamFailure]]


@dataclass(eq=False, slots=True)
class Seat:
    """One attempt's account: the pooled one leased for it, or a caller's own key."""

    account: Account
    api: AccountApi
    lease: Lease | None = None


class Source(ABC):
    """Accounts for a request's attempts; what their failures and quota notices teach."""

    attempts: int

    @abstractmethod
    async def take(self, tried: set[Account], failures: Failures, prefer: str | None = None) -> Seat:
        """An account for the next attempt; `prefer` names (by id) the one a session continues on."""

    async def give_back(self, seat: Seat) -> None:
        """Release what `take` held."""

    @abstractmethod
    async def org(self, seat: Seat) -> str: ...

    async def learn(self, seat: Seat, failure: UpstreamFailure) -> None:
        """Record what the failure says about the account (nothing, for a caller's own key)."""

    async def succeeded(self, seat: Seat) -> None:
        """The account's answer started (nothing to record for a caller's own key)."""

    async def learned(self, seat: Seat) -> None:
        """The account's optional upstream features were learned (kept on the account)."""

    async def limit_reached(self, seat: Seat, resets_at: float | None) -> None:
        """The account reached its usage limit with an answer that is itself fine."""

    async def quota(self, seat: Seat, windows: dict[str, Window]) -> None:
        """claude.ai reported the account's quota windows."""

    @abstractmethod
    def give_up(self, failure: UpstreamFailure) -> RelayError:
        """The error for a failure that will not be tried elsewhere."""

    @abstractmethod
    def exhausted(self, failures: Failures) -> RelayError:
        """The error when every attempt failed."""


class PoolSource(Source):
    """Accounts leased from the pool; failures and quota notices go back to it."""

    def __init__(
        self,
        pool: AccountPool,
        orgs: OrgDiscovery,
        api: Callable[[Account], AccountApi],
        *,
        max_retries: int | None,
        model: str | None = None,
    ) -> None:
        self.pool = pool
        self.orgs = orgs
        self.api = api
        # MAX_RETRIES, else every account but at most five (accounts come and go while running).
        self.attempts = max_retries or max(1, min(len(pool), 5))
        self.model = model

    async def take(self, tried: set[Account], failures: Failures, prefer: str | None = None) -> Seat:
        try:
            lease = await self.pool.acquire(exclude=tried, model=self.model, prefer=prefer)
        except InvalidRequest:
            raise
        except RelayError:
            raise self.exhausted(failures) from None
        return Seat(lease.account, self.api(lease.account), lease)

    async def give_back(self, seat: Seat) -> None:
        if seat.lease is not None:
            await self.pool.release(seat.lease)

    async def org(self, seat: Seat) -> str:
        account = seat.account
        if not account.org_id:
            account.org_id = await self.orgs.discover(account.key, seat.api)
            await self.pool.save_org(account)
        return account.org_id

    async def learn(self, seat: Seat, failure: UpstreamFailure) -> None:
        if failure.kind is Failure.MODEL_UNAVAILABLE and self.model is not None:
            await self.pool.record_missing_model(seat.account, self.model)
            return
        await self.pool.record_failure(seat.account, failure)

    async def succeeded(self, seat: Seat) -> None:
        await self.pool.record_success(seat.account)

    async def learned(self, seat: Seat) -> None:
        await self.pool.save_learned(seat.account)

    async def limit_reached(self, seat: Seat, resets_at: float | None) -> None:
        await self.pool.cool_down(seat.account, resets_at)

    async def quota(self, seat: Seat, windows: dict[str, Window]) -> None:
        await self.pool.record_usage(seat.account, windows)

    def give_up(self, failure: UpstreamFailure) -> RelayError:
        return client_error(failure, self.pool.now())

    def exhausted(self, failures: Failures) -> RelayError:
        """The pool's own story, or what each attempt met."""
        if not failures or not any(a.usable(self.pool.now()) for a in self.pool.accounts):
            return self.pool.unavailable()
        if all(f.kind is Failure.MODEL_UNAVAILABLE for _, f in failures):
            message = f"model {self.model!r} is not available on any account's plan"
            return InvalidRequest(message, param="model", code="model_not_available")
        if all(f.kind is Failure.RATE_LIMITED for _, f in failures):
            # Limits that reset within the second still mean "later", not a broken upstream.
            return client_error(min(failures, key=lambda af: af[1].resets_at or 0)[1], self.pool.now())
        detail = "; ".join(f"{a.alias}: {f.message}" for a, f in failures)
        if failures[-1][1].kind is Failure.TIMEOUT:
            return UpstreamTimeout(f"claude.ai did not answer ({detail})")
        return UpstreamError(f"claude.ai failed on {len(failures)} attempt(s): {detail}")


class GuestSource(Source):
    """Mirror mode: one attempt with the caller's own key; nothing is learned for the pool."""

    attempts = 1

    def __init__(self, spec: SessionSpec, upstream: UpstreamClient, orgs: OrgDiscovery) -> None:
        key = spec.key.get_secret_value()
        self.seat = Seat(Account(key=key, alias="mirror", org_id=spec.org_id), upstream.for_key(key, guest=True))
        self.orgs = orgs

    async def take(self, tried: set[Account], failures: Failures, prefer: str | None = None) -> Seat:
        return self.seat

    async def org(self, seat: Seat) -> str:
        return seat.account.org_id or await self.orgs.for_guest(seat.account.key, seat.api)

    def give_up(self, failure: UpstreamFailure) -> RelayError:
        if failure.kind is Failure.INVALID:
            return AuthError("claude.ai refused this sessionKey (invalid or expired)", code="invalid_session_key")
        return client_error(failure, time.time())

    def exhausted(self, failures: Failures) -> RelayError:
        return self.give_up(failures[-1][1])


def client_error(failure: UpstreamFailure, now: float) -> RelayError:
    """An upstream failure as the caller should see it, when no other account will be tried."""
    if failure.kind is Failure.RATE_LIMITED:
        wait = max(1, math.ceil((failure.resets_at or now + 60) - now))
        return RateLimited(f"claude.ai usage limit reached; try again in {wait} s", retry_after=wait)
    if failure.kind is Failure.REJECTED:
        return InvalidRequest(f"claude.ai refused the request: {failure.message}", code="upstream_rejected")
    if failure.kind is Failure.TIMEOUT:
        return UpstreamTimeout(f"claude.ai: {failure.message}")
    return UpstreamError(f"claude.ai: {failure.message}")
