"""The account pool: which cookie serves next, and what each failure means for it."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from loguru import logger

from ..claude.failures import Failure, UpstreamFailure
from ..config import SessionSpec
from ..errors import InvalidRequest, NoAccountAvailable, RateLimited, RelayError
from ..reply import Window
from .account import STATE_OF, Account, State, clock_text
from .state import Lease, MemoryStore, StateStore

# Failures that say nothing about the cookie but make an account slow or flaky to use.
TRANSIENT = frozenset({Failure.TRANSIENT, Failure.TIMEOUT})
# A flaky account is avoided for 15 s after its first failure in a row, doubling up to 5 minutes:
# long enough that a hanging account is not tried on every request (each try costs a timeout),
# short enough that a passing hiccup costs little. Avoided, not excluded: when no healthy account
# is left, the backing-off ones still serve.
BACKOFF_FIRST = 15.0
BACKOFF_MAX = 300.0
# How often a retiring account is looked at until its last request has finished.
RETIRE_POLL = 0.2
# The states in which claude.ai refuses the cookie itself; only a reload or a check retries them.
REFUSED = frozenset({State.INVALID, State.DISABLED})


class OrgLookup(Protocol):
    """What a check asks of claude.ai for one account."""

    async def discover_org(self) -> str: ...


class AccountPool:
    """Picks the account for each attempt and learns from outcomes; state lives in a StateStore."""

    def __init__(
        self,
        sessions: Iterable[SessionSpec],
        store: StateStore | None = None,
        clock: Callable[[], float] = time.time,
        dead_after: float = 0.0,
    ) -> None:
        self._clock = clock
        self.dead_after = dead_after  # DEAD_ACCOUNT_TTL; 0: a refused account is never declared dead
        self.store = store or MemoryStore()
        self._accounts: list[Account] = []
        self._sessions = tuple(sessions)  # from SESSIONS
        self._added: list[SessionSpec] = []  # through the admin API, kept in the state store
        self._replace(self._sessions)

    def __len__(self) -> int:
        return len(self._accounts)

    @property
    def accounts(self) -> list[Account]:
        return list(self._accounts)

    def now(self) -> float:
        """The pool's clock (wall-clock seconds; tests drive their own)."""
        return self._clock()

    def current(self) -> list[Account]:
        """The accounts as they stand now: cooldowns that have passed show as active again."""
        self.revive(self._clock())
        return list(self._accounts)

    def revive(self, now: float) -> None:
        """The one place where accounts whose cooldown has passed become active again, and where
        accounts refused for longer than DEAD_ACCOUNT_TTL are declared dead (every replica reaches
        the same verdict from the shared `refused_since`)."""
        for account in self._accounts:
            if account.cooled_down(now):
                logger.info("account {} is back after its cooldown", account.alias)
                self._set(account, State.ACTIVE, None, "", None)
            elif account.state in REFUSED and self._dead(account, now):
                logger.warning(
                    "account {} ({}) refused since {}: dead, out of rotation until checked or removed",
                    account.alias,
                    account.masked,
                    clock_text(account.refused_since or now),
                )
                account.state = State.DEAD

    def _dead(self, account: Account, now: float) -> bool:
        since = account.refused_since
        return bool(self.dead_after) and since is not None and now - since >= self.dead_after

    async def start(self) -> None:
        await self._take_added(await self.store.load_records("added"))
        await self.store.start(lambda: self._accounts)

    async def refresh(self) -> None:
        """Take in what other replicas learned (no-op for a single process)."""
        added = await self.store.load_records("added")
        if added is not None and added != [s.record() for s in self._added]:
            await self._take_added(added)
        await self.store.refresh(self._accounts)

    async def _take_added(self, records: list[dict[str, Any]] | None) -> None:
        """The accounts added through the admin API, as the store has them; a store that cannot
        say now (Redis unreachable) changes nothing."""
        if records is None:
            return
        specs = []
        for rec in records:
            try:
                specs.append(SessionSpec.model_validate(rec))
            except ValueError:
                logger.warning("an added account in the state store is malformed; skipped")
        self._added = specs
        self._replace((*self._sessions, *self._added))

    def find(self, alias: str) -> Account | None:
        return next((a for a in self._accounts if a.alias == alias), None)

    def has_key(self, key: str) -> bool:
        return self.holding(key) is not None

    def holding(self, key: str) -> Account | None:
        return next((a for a in self._accounts if a.key == key), None)

    async def add(self, spec: SessionSpec) -> Account:
        """An account added while running (checked by the caller); kept in the state store."""
        (account,) = await self.add_many([spec])
        return account

    async def add_many(self, specs: list[SessionSpec]) -> list[Account]:
        """Accounts added while running (checked by the caller), saved to the state store at once;
        a cookie already in the pool is not added twice."""
        fresh = [s for s in specs if not self.has_key(s.key.get_secret_value())]
        self._added.extend(fresh)
        self._replace((*self._sessions, *self._added))
        await self.store.save_records("added", [s.record() for s in self._added])
        added = [a for s in fresh if (a := self.holding(s.key.get_secret_value())) is not None]
        for account in added:
            logger.info("account {} added ({})", account.alias, account.masked)
        return added

    async def check(self, account: Account, api: OrgLookup) -> None:
        """Ask claude.ai about the account now (its organization lookup): a refusal is learned
        like any failure; an answer brings an invalid or disabled account back."""
        try:
            account.org_id = await api.discover_org()
        except UpstreamFailure as failure:
            await self.record_failure(account, failure)
            return
        if account.state is not State.ACTIVE or account.refused_since is not None:
            self._set(account, State.ACTIVE, None, "", None)
            account.refused_since = None
            await self.store.save(account, failed=False, changed=True)
        await self.store.save_org(account)

    async def retire(self, account: Account) -> None:
        """Take an account out: no new request gets it, and it leaves once its requests are done.
        An account from SESSIONS comes back with the next reload or restart unless removed there."""
        account.retiring = True
        while account.in_flight_here > 0:
            await asyncio.sleep(RETIRE_POLL)
        key = account.key
        self._added = [s for s in self._added if s.key.get_secret_value() != key]
        self._sessions = tuple(s for s in self._sessions if s.key.get_secret_value() != key)
        self._replace((*self._sessions, *self._added))
        await self.store.save_records("added", [s.record() for s in self._added])
        logger.info("account {} removed", account.masked)

    async def reload(self, sessions: Iterable[SessionSpec]) -> tuple[int, int]:
        """Replace the SESSIONS accounts, keeping what is known of keys that stay and the accounts
        added through the admin API; invalid and disabled accounts get another chance (dead ones do
        not: their refusal is older than DEAD_ACCOUNT_TTL, and it is kept until an answer). Returns
        (added, removed)."""
        self._sessions = tuple(sessions)
        added, removed = self._replace((*self._sessions, *self._added))
        for account in self._accounts:
            if account.state in REFUSED:
                self._set(account, State.ACTIVE, None, "", None)
                await self.store.save(account, failed=False, changed=True)
        await self.refresh()
        return added, removed

    def _replace(self, sessions: Iterable[SessionSpec]) -> tuple[int, int]:
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
            account.proxy = spec.proxy.get_secret_value() if spec.proxy else None
            fresh[key] = account
        for i, account in enumerate(fresh.values(), 1):
            account.alias = f"acct-{i}"
        self._accounts = list(fresh.values())
        return added, len(old)

    async def acquire(self, exclude: set[Account] | None = None, model: str | None = None, prefer: str | None = None) -> Lease:
        """A lease on the usable account with the most quota headroom (in-flight requests counted),
        then the least recently used; accounts backing off after transient failures only when no
        other can serve, and never one whose plan lacks `model`. The account `prefer` names (a
        session's) goes first whenever it could serve at all."""
        now = self._clock()
        self.revive(now)
        usable = [a for a in self._accounts if a.usable(now) and not a.retiring and not (exclude and a in exclude)]
        if model is not None and usable and all(model in a.models_unavailable for a in usable):
            raise InvalidRequest(
                f"model {model!r} is not available on any account's plan", param="model", code="model_not_available"
            )
        usable = [a for a in usable if model not in a.models_unavailable]
        candidates = [a for a in usable if a.healthy(now)] or usable
        preferred = [a for a in candidates if a.id == prefer]
        lease = await self.store.acquire(preferred, now) if preferred else None
        if lease is None and candidates:
            lease = await self.store.acquire(candidates, now)
        if lease is None:
            await self.refresh()
            raise self.unavailable()
        return lease

    async def release(self, lease: Lease) -> None:
        await self.store.release(lease)

    async def save_org(self, account: Account) -> None:
        await self.store.save_org(account)

    async def record_failure(self, account: Account, failure: UpstreamFailure, *, counted: bool = True) -> None:
        """Learn from a failure: cool down, retire, back off or just count it."""
        if counted:
            account.failures += 1
            account.last_error = f"{failure.kind.value}: {failure.message}"
        if failure.kind in TRANSIENT:
            account.streak += 1
            pause = min(BACKOFF_FIRST * 2 ** (account.streak - 1), BACKOFF_MAX)
            account.backoff_until = self._clock() + pause
            logger.info("account {} backs off {:.0f} s after {} failure(s) in a row", account.alias, pause, account.streak)
            await self.store.save_learned(account)
        state = STATE_OF.get(failure.kind)
        if state in REFUSED:  # `revive` declares it dead once this is older than DEAD_ACCOUNT_TTL
            account.refused_since = account.refused_since or self._clock()
        if state is not None:
            self._set(account, state, failure.kind, failure.message, failure.cooldown_until(self._clock()))
            when = f" until {clock_text(account.until)}" if account.until else ""
            logger.warning("account {} is now {}{}: {}", account.alias, state.value, when, failure.message)
        if state is not None or counted:
            await self.store.save(account, failed=counted, changed=state is not None)

    async def record_missing_model(self, account: Account, model: str) -> None:
        """The account's plan lacks the model: the account stays, requests for it go elsewhere."""
        if model not in account.models_unavailable:
            logger.info("account {} has no {}; requests for it go to other accounts", account.alias, model)
            account.models_unavailable.add(model)
            await self.store.save_learned(account)

    async def record_success(self, account: Account) -> None:
        """An answer started: the account is healthy again."""
        if account.refused_since is not None:  # served after a reload gave it another chance
            account.refused_since = None
            await self.store.save(account, failed=False, changed=True)
        if account.streak or account.backoff_until is not None:
            account.streak, account.backoff_until = 0, None
            await self.store.save_learned(account)

    async def save_learned(self, account: Account) -> None:
        """Share what was learned about the account (e.g. the upstream features it takes)."""
        await self.store.save_learned(account)

    async def record_usage(self, account: Account, windows: dict[str, Window]) -> None:
        """Keep what claude.ai said of the account's quota windows; a used-up window cools the
        account until it resets, before any request meets a 429."""
        now = self._clock()
        account.usage, account.usage_at = dict(windows), now
        await self.store.save_usage(account)
        spent = [w for w in windows.values() if w.exhausted(now)]
        if spent and account.state is State.ACTIVE:
            resets = max((w.resets_at for w in spent if w.resets_at), default=None)
            await self.cool_down(account, resets)

    async def cool_down(self, account: Account, resets_at: float | None) -> None:
        """The answer was fine, but the account reached its usage limit with it."""
        limit = UpstreamFailure(Failure.RATE_LIMITED, "usage limit reached", resets_at=resets_at)
        await self.record_failure(account, limit, counted=False)

    @staticmethod
    def _set(account: Account, state: State, failure: Failure | None, reason: str, until: float | None) -> None:
        account.state, account.failure, account.reason, account.until = state, failure, reason, until

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
                f"all {len(idle)} accounts are rate limited; the first resets at {clock_text(soonest)}",
                code="all_accounts_rate_limited",
                retry_after=wait,
            )
        if len(idle) < len(self._accounts):
            return NoAccountAvailable("every usable account is busy failing this request", retry_after=5)
        counts = Counter(_describe(a) for a in idle)
        detail = ", ".join(f"{n} {'account' if n == 1 else 'accounts'} {what}" for what, n in counts.most_common())
        next_back = min((a.until for a in idle if a.until), default=None)
        retry = max(1, math.ceil(next_back - now)) if next_back else None
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
    if account.state is State.DEAD:
        return "dead (refused for longer than DEAD_ACCOUNT_TTL; check or remove it)"
    return "invalid (sessionKey expired or revoked)"
