"""The account pool: which cookie serves next, and what each one has taught us."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from loguru import logger

from .config import SessionSpec
from .errors import NoAccountAvailable, RateLimited, RelayError
from .failures import Failure, UpstreamFailure


class State(StrEnum):
    ACTIVE = "active"
    COOLING = "cooling"  # rate limited until `until`
    INVALID = "invalid"  # cookie refused; only a reload brings it back
    DISABLED = "disabled"  # organization disabled or banned
    BLOCKED = "blocked"  # Cloudflare or region/IP block, retried after `until`


_STATE_OF = {
    Failure.RATE_LIMITED: State.COOLING,
    Failure.INVALID: State.INVALID,
    Failure.DISABLED: State.DISABLED,
    Failure.REGION: State.BLOCKED,
    Failure.CLOUDFLARE: State.BLOCKED,
}


def mask_key(key: str) -> str:
    """`sk-ant-sid01-...ab12`: enough to tell cookies apart, useless to anyone who reads it."""
    head = key[: key.find("-", 8) + 1] if key.startswith("sk-ant-") else key[:4]
    return f"{head}...{key[-4:]}" if len(key) > 16 else "***"


def _clock_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(eq=False, slots=True)
class Account:
    """One sessionKey and its learned state. The key never appears in repr or logs."""

    key: str
    alias: str
    org_id: str | None = None
    state: State = State.ACTIVE
    failure: Failure | None = None
    reason: str = ""
    until: float | None = None
    requests: int = 0
    failures: int = 0
    in_flight: int = 0
    last_error: str = ""
    last_used: float = 0.0
    # Whether claude.ai creates chats from `create_conversation_params` for this account (None: not known yet).
    inline_create: bool | None = None

    def __repr__(self) -> str:
        return f"Account({self.alias}, {self.masked}, {self.state.value})"

    @property
    def masked(self) -> str:
        return mask_key(self.key)

    def usable(self, now: float) -> bool:
        """Active, or a cooldown that has passed (which makes it active again)."""
        if self.state in (State.COOLING, State.BLOCKED) and self.until is not None and self.until <= now:
            logger.info("account {} is back after its cooldown", self.alias)
            self.state, self.failure, self.reason, self.until = State.ACTIVE, None, "", None
        return self.state is State.ACTIVE

    def view(self) -> dict[str, Any]:
        """What `/v1/accounts` shows: no full key."""
        return {
            "alias": self.alias,
            "key": self.masked,
            "org_id": self.org_id,
            "state": self.state.value,
            "reason": self.reason or None,
            "cooldown_until": self.until,
            "requests": self.requests,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "last_error": self.last_error or None,
            "last_used": self.last_used or None,
        }


class AccountPool:
    """Picks the account for each attempt and records outcomes; in-process state."""

    def __init__(self, sessions: Iterable[SessionSpec], clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._accounts: list[Account] = []
        self.reload(sessions)

    def __len__(self) -> int:
        return len(self._accounts)

    @property
    def accounts(self) -> list[Account]:
        return list(self._accounts)

    def reload(self, sessions: Iterable[SessionSpec]) -> tuple[int, int]:
        """Replace the account list, keeping the state of keys that stay. Returns (added, removed)."""
        old = {a.key: a for a in self._accounts}
        fresh: dict[str, Account] = {}
        added = 0
        for spec in sessions:
            key = spec.key.get_secret_value()
            if key in fresh:
                continue
            account = old.pop(key, None)
            if account is None:
                account, added = Account(key=key, alias=""), added + 1
            if spec.org_id:
                account.org_id = spec.org_id
            fresh[key] = account
        for i, account in enumerate(fresh.values(), 1):
            account.alias = f"acct-{i}"
        self._accounts = list(fresh.values())
        return added, len(old)

    def acquire(self, exclude: set[Account] | None = None) -> Account:
        """The usable account with the fewest in-flight requests, then the least recently used."""
        now = self._clock()
        candidates = [a for a in self._accounts if a.usable(now) and not (exclude and a in exclude)]
        if not candidates:
            raise self.unavailable(now)
        account = min(candidates, key=lambda a: (a.in_flight, a.last_used))
        account.in_flight += 1
        account.requests += 1
        account.last_used = now
        return account

    def release(self, account: Account) -> None:
        account.in_flight = max(0, account.in_flight - 1)

    def record_failure(self, account: Account, failure: UpstreamFailure) -> None:
        """Learn from a failure: cool down, retire or just count it."""
        now = self._clock()
        account.failures += 1
        account.last_error = f"{failure.kind.value}: {failure.message}"
        state = _STATE_OF.get(failure.kind)
        if state is None:
            return
        account.state, account.failure, account.reason = state, failure.kind, failure.message
        account.until = failure.cooldown_until(now)
        when = f" until {_clock_text(account.until)}" if account.until else ""
        logger.warning("account {} is now {}{}: {}", account.alias, state.value, when, failure.message)

    def cool_down(self, account: Account, resets_at: float | None) -> None:
        """The answer was fine, but the account reached its usage limit with it."""
        self.record_failure(account, UpstreamFailure(Failure.RATE_LIMITED, "usage limit reached", resets_at=resets_at))
        account.failures -= 1

    def unavailable(self, now: float | None = None) -> RelayError:
        """Why no account can serve: 429 with Retry-After if all are cooling, else 503 naming each state."""
        now = self._clock() if now is None else now
        idle = [a for a in self._accounts if not a.usable(now)]
        if not self._accounts:
            return NoAccountAvailable("no accounts are configured (SESSIONS is empty)")
        if idle and len(idle) == len(self._accounts) and all(a.state is State.COOLING for a in idle):
            soonest = min(a.until or now for a in idle)
            wait = max(1, math.ceil(soonest - now))
            return RateLimited(
                f"all {len(idle)} accounts are rate limited; the first resets at {_clock_text(soonest)}",
                code="all_accounts_rate_limited",
                retry_after=wait,
            )
        if len(idle) < len(self._accounts):
            return NoAccountAvailable("every usable account is busy failing this request", retry_after=5)
        counts = Counter(_describe(a) for a in idle)
        detail = ", ".join(f"{n} {'account' if n == 1 else 'accounts'} {what}" for what, n in counts.most_common())
        soonest = min((a.until for a in idle if a.until), default=None)
        retry = max(1, math.ceil(soonest - now)) if soonest else None
        return NoAccountAvailable(f"no account can serve: {detail}", retry_after=retry)


def _describe(account: Account) -> str:
    if account.failure is Failure.CLOUDFLARE:
        return "blocked by Cloudflare (check the server IP or PROXY)"
    if account.failure is Failure.REGION:
        return "blocked for this region/IP (use a PROXY in a supported region)"
    if account.state is State.COOLING:
        return "rate limited"
    if account.state is State.DISABLED:
        return "disabled or banned"
    return "invalid (sessionKey expired or revoked)"
