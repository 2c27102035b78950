"""Account state shared by replicas through Redis, with this process's own state as the fallback.

Keys (under STATE_PREFIX, accounts named by a hash of their key, never the key itself):
  {p}:state:{id}     JSON of a non-active state; expires with the cooldown, so accounts come back by themselves
  {p}:acct:{id}      hash of counters, the organization id and the quota windows (`usage`)
  {p}:inflight:{id}  sorted set of leases scored by expiry: a replica that dies leaks nothing for long
  {p}:lru            sorted set of last use, the rotation order
  {p}:added          JSON list of the accounts added through the admin API (with their cookies)
  {p}:keys           JSON list of the client keys made through the admin API (hashed)
  {p}:answer:{id}    a kept Responses answer (input and output items), expiring after RESPONSE_TTL
  {p}:t:{table}      counters over time (relay.pool.tallies): usage:{hour}, budget:d:{day}, budget:m:{month}
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from loguru import logger
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from .account import IN_FLIGHT_SHARE, Account, State
from .key_limits import KeyLimit, KeyTicket, RedisKeyLimits
from .records import LearnedRecord, StateRecord, UsageRecord
from .redis_tallies import RedisTallies
from .sealing import SealError, is_sealed
from .sessions import KeptChat, RedisSessions, SessionPoint
from .state import RECORD_KINDS, Lease, MemoryStore, RecordKind, StateStore, opened_records, sealed_records

T = TypeVar("T")

# Pick the usable candidate with the most quota headroom once its live leases (on every replica)
# are counted, then the least recently used, and take a lease on it, all in one step so that
# replicas never race. ARGV after the first five: account id, then its headroom (0..1).
ACQUIRE = """
local p, now, expires, token, share = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local best, best_score, best_used
for i = 6, #ARGV, 2 do
  local id, room = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('EXISTS', p .. ':state:' .. id) == 0 then
    local inflight = p .. ':inflight:' .. id
    redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
    local score = room - redis.call('ZCARD', inflight) * share
    local used = tonumber(redis.call('ZSCORE', p .. ':lru', id) or '0')
    if best == nil or score > best_score or (score == best_score and used < best_used) then
      best, best_score, best_used = id, score, used
    end
  end
end
if best then
  redis.call('ZADD', p .. ':inflight:' .. best, expires, token)
  redis.call('ZADD', p .. ':lru', now, best)
  redis.call('HINCRBY', p .. ':acct:' .. best, 'requests', 1)
  redis.call('HSET', p .. ':acct:' .. best, 'last_used', now)
end
return best
"""
_FAILED = object()


class RedisStore(StateStore):
    """Shared state for several relays over the same accounts."""

    def __init__(self, url: str, *, prefix: str, lease_seconds: float, local: MemoryStore) -> None:
        # One retry on a fresh connection: after Redis restarts, every pooled connection is dead and
        # the first command on each would fail otherwise.
        self.client: Redis = Redis.from_url(
            url,
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
            decode_responses=True,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[ConnectionError],
        )
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.local = local  # serves while Redis is unreachable
        self._acquire = self.client.register_script(ACQUIRE)
        self._key_limits = RedisKeyLimits(self.client, prefix, lease_seconds)
        self._sessions = RedisSessions(self.client, prefix, local.sessions.ttl)
        self.tallies = RedisTallies(self.client, prefix, local.tallies)
        self._accounts: Callable[[], list[Account]] = list
        self._leases: dict[str, Lease] = {}
        self._dirty: set[Account] = set()
        self._sync: asyncio.Task[None] | None = None
        self._redis_problem: str | None = None

    @property
    def degraded(self) -> str | None:
        return self._redis_problem or self.local.degraded

    def _key(self, kind: str, account_id: str) -> str:
        return f"{self.prefix}:{kind}:{account_id}"

    async def _try(self, op: Callable[[], Awaitable[T]]) -> T | object:
        """Run a Redis operation; on failure note the store as degraded and return _FAILED."""
        try:
            result = await op()
        except (RedisError, OSError) as exc:
            if self._redis_problem is None:
                logger.warning("Redis unreachable, serving from local state: {}", exc.__class__.__name__)
            self._redis_problem = f"redis unavailable ({exc.__class__.__name__})"
            return _FAILED
        if self._redis_problem is not None:
            self._redis_problem = None
            logger.info("Redis reachable again; sharing state")
            await self._push_dirty()
        return result

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, accounts: Callable[[], list[Account]]) -> None:
        self._accounts = accounts
        await self.local.start(accounts)
        await self.refresh(accounts())
        self._sync = asyncio.create_task(self._keep_in_sync())

    async def close(self) -> None:
        await self.tallies.close()
        await self.local.close()
        if self._sync is not None:
            self._sync.cancel()
            await asyncio.gather(self._sync, return_exceptions=True)
        await self.client.aclose()

    async def _keep_in_sync(self) -> None:
        """Renew this replica's leases and take in what the others learned, a few times per lease."""
        interval = min(5.0, self.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            expires = time.time() + self.lease_seconds
            if self._leases:
                await self._try(partial(self._renew, expires))
            await self._try(partial(self._key_limits.renew, expires))
            await self.refresh(self._accounts())

    async def _renew(self, expires: float) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for token, lease in self._leases.items():
                pipe.zadd(self._key("inflight", lease.account.id), {token: expires}, xx=True)
            await pipe.execute()

    # -- StateStore -----------------------------------------------------------------------------

    async def acquire(self, candidates: list[Account], now: float) -> Lease | None:
        token = uuid.uuid4().hex
        pairs = [v for a in candidates for v in (a.id, repr(a.headroom(now)))]
        args: list[Any] = [self.prefix, now, now + self.lease_seconds, token, IN_FLIGHT_SHARE, *pairs]
        chosen = await self._try(lambda: self._acquire(args=args))
        if chosen is _FAILED:
            return await self.local.acquire(candidates, now)
        if chosen is None:
            return None
        account = next(a for a in candidates if a.id == chosen)
        account.requests += 1
        account.in_flight_here += 1
        account.in_flight_all += 1
        account.last_used = now
        lease = Lease(account, token, shared=True)
        self._leases[token] = lease
        return lease

    async def release(self, lease: Lease) -> None:
        if not lease.shared:
            await self.local.release(lease)
            return
        self._leases.pop(lease.token, None)
        lease.account.in_flight_here = max(0, lease.account.in_flight_here - 1)
        lease.account.in_flight_all = max(0, lease.account.in_flight_all - 1)
        await self._try(lambda: self.client.zrem(self._key("inflight", lease.account.id), lease.token))

    async def find_session(self, digests: list[str], now: float) -> tuple[str, SessionPoint] | None:
        found = await self._try(partial(self._sessions.find, digests))
        if found is _FAILED:
            return await self.local.find_session(digests, now)
        return found  # type: ignore[return-value]

    async def session_chat(self, conv: str) -> KeptChat | None:
        found = await self._try(partial(self._sessions.chat, conv))
        return await self.local.session_chat(conv) if found is _FAILED else found  # type: ignore[return-value]

    async def keep_session(self, digest: str, point: SessionPoint, now: float) -> None:
        if await self._try(partial(self._sessions.keep, digest, point, now)) is _FAILED:
            await self.local.keep_session(digest, point, now)

    async def forget_chat(self, conv: str, account: str) -> None:
        await self.local.forget_chat(conv, account)
        await self._try(partial(self._sessions.forget, conv, account))

    async def expired_chats(self, before: float) -> list[KeptChat]:
        local = await self.local.expired_chats(before)  # kept here while Redis was away
        shared = await self._try(partial(self._sessions.expired, before))
        return local + (shared if isinstance(shared, list) else [])

    async def open_sessions(self, accounts: list[str]) -> dict[str, int]:
        found = await self._try(partial(self._sessions.open_by_account, accounts))
        return await self.local.open_sessions(accounts) if found is _FAILED else found  # type: ignore[return-value]

    @property
    def keeps_sessions(self) -> bool:
        return True

    async def admit_key(self, limit: KeyLimit, now: float) -> KeyTicket:
        ticket = await self._try(partial(self._key_limits.admit, limit, now))
        if ticket is _FAILED:
            return await self.local.admit_key(limit, now)
        assert isinstance(ticket, KeyTicket)
        return ticket

    async def release_key(self, ticket: KeyTicket) -> None:
        if not ticket.shared:
            await self.local.release_key(ticket)
            return
        await self._try(partial(self._key_limits.release, ticket))

    async def save(self, account: Account, *, failed: bool, changed: bool) -> None:
        await self.local.save(account, failed=failed, changed=changed)
        if await self._try(lambda: self._save(account, failed, changed)) is _FAILED and changed:
            self._dirty.add(account)

    async def _save(self, account: Account, failed: bool, changed: bool) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            state_key = self._key("state", account.id)
            if changed and account.state is State.ACTIVE:
                pipe.delete(state_key)
            elif changed:
                # A cooldown expires with its key, so the account comes back by itself everywhere.
                expires = int(account.until * 1000) if account.until else None
                pipe.set(state_key, StateRecord.of(account).model_dump_json(), pxat=expires)
            if failed:
                pipe.hincrby(self._key("acct", account.id), "failures", 1)
                pipe.hset(self._key("acct", account.id), "last_error", account.last_error)
            await pipe.execute()

    async def save_usage(self, account: Account) -> None:
        usage = UsageRecord.of(account).model_dump_json()
        await self._try(lambda: self.client.hset(self._key("acct", account.id), "usage", usage))

    async def save_learned(self, account: Account) -> None:
        learned = LearnedRecord.of(account).model_dump_json()
        await self._try(lambda: self.client.hset(self._key("acct", account.id), "learned", learned))

    async def save_org(self, account: Account) -> None:
        await self.local.save_org(account)
        if account.org_id:
            await self._try(lambda: self.client.hset(self._key("acct", account.id), "org_id", account.org_id or ""))

    @property
    def secrets_refused(self) -> str | None:
        if self.local.sealer is not None or self.local.plaintext:
            return None
        return "Redis would keep the cookie unencrypted"

    async def load_records(self, kind: RecordKind) -> list[dict[str, Any]] | None:
        """The shared records; None while Redis is unreachable. Records Redis has lost (a restart
        without persistence) are written back from what this replica knows."""
        name = f"{self.prefix}:{kind}"
        found = await self._try(lambda: self.client.get(name))
        if found is _FAILED:
            return None
        known = await self.local.load_records(kind)
        if found is None:
            if known:
                logger.warning("Redis has lost the {} records; writing back the {} this replica knows", kind, len(known))
                await self.save_records(kind, known or [])
            return known
        records = opened_records(found if is_sealed(str(found)) else _json(str(found)), self.local.sealer)
        if records is not None:
            await self.local.save_records(kind, records)  # kept, should Redis lose them
        return records

    async def save_records(self, kind: RecordKind, records: list[dict[str, Any]]) -> None:
        await self.local.save_records(kind, records)
        shared = sealed_records(kind, records, self.local.sealer)
        text = shared if isinstance(shared, str) else json.dumps(shared)
        await self._try(lambda: self.client.set(f"{self.prefix}:{kind}", text))

    async def keep_answer(self, answer_id: str, data: bytes) -> None:
        ttl = max(1, int(self.local.answer_ttl))
        sealer = self.local.sealer
        text = sealer.seal(data) if sealer else data.decode()
        if await self._try(lambda: self.client.set(self._key("answer", answer_id), text, ex=ttl)) is _FAILED:
            await self.local.keep_answer(answer_id, data)

    async def load_answer(self, answer_id: str) -> bytes | None:
        found = await self._try(lambda: self.client.get(self._key("answer", answer_id)))
        if not isinstance(found, str):
            return await self.local.load_answer(answer_id)
        if not is_sealed(found):
            return found.encode()
        try:
            assert self.local.sealer is not None
            return self.local.sealer.open(found)
        except (AssertionError, SealError):
            logger.warning("a kept answer does not open with this STATE_SECRET")
            return None

    async def refresh(self, accounts: list[Account]) -> None:
        if not accounts:
            return
        now = time.time()
        fetched = await self._try(lambda: self._fetch(accounts, now))
        if fetched is _FAILED:
            return
        assert isinstance(fetched, list)
        for account, (state, fields, in_flight) in zip(accounts, zip(fetched[0::3], fetched[1::3], fetched[2::3]), strict=True):
            if state:
                _apply_state(account, state)
            elif account.state is not State.ACTIVE:
                account.state, account.failure, account.reason, account.until = State.ACTIVE, None, "", None
            requests, failures, last_error, last_used, org_id, usage, learned = fields
            account.requests = int(requests or 0)
            account.failures = int(failures or 0)
            account.last_error = last_error or ""
            account.last_used = float(last_used or 0)
            account.in_flight_all = int(in_flight)
            if org_id and not account.org_id:
                account.org_id = org_id
            if usage and (shared := UsageRecord.parse(usage)) is not None:
                shared.apply(account)
            if learned:
                _apply_learned(account, learned)

    async def _fetch(self, accounts: list[Account], now: float) -> list[object]:
        async with self.client.pipeline(transaction=False) as pipe:
            for account in accounts:
                pipe.get(self._key("state", account.id))
                pipe.hmget(
                    self._key("acct", account.id),
                    ["requests", "failures", "last_error", "last_used", "org_id", "usage", "learned"],
                )
                pipe.zcount(self._key("inflight", account.id), now, "+inf")
            return list(await pipe.execute())

    async def _push_dirty(self) -> None:
        """What was learned while Redis was away goes there as soon as it is back, and what an
        operator added is written back if Redis lost it meanwhile."""
        dirty, self._dirty = self._dirty, set()
        for account in dirty:
            if await self._try(lambda a=account: self._save(a, False, True)) is _FAILED:  # type: ignore[misc]
                self._dirty.add(account)
        for kind in RECORD_KINDS:
            await self.load_records(kind)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _apply_learned(account: Account, text: str) -> None:
    try:
        LearnedRecord.model_validate_json(text).apply(account)
    except ValidationError:
        logger.debug("what another replica learned of {} is malformed; kept what this one knows", account.alias)


def _apply_state(account: Account, text: str) -> None:
    """An account's state as another replica kept it; a record that does not validate is skipped."""
    try:
        StateRecord.model_validate_json(text).apply(account)
    except ValidationError:
        logger.warning("the shared state of {} is malformed; kept what this replica knows", account.alias)
