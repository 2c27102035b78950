"""Named client keys' limits (requests per minute, requests at once), counted where every replica
sees them: in this process, or in Redis with one atomic script so two replicas never both let a
request over a key's limit."""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import RateLimited

if TYPE_CHECKING:  # redis is imported only when STATE_URL is set
    from redis.asyncio import Redis

# Seconds of the requests-per-minute window.
MINUTE = 60.0

# Drop what has left the window and expired leases, refuse over either limit, else count the
# request in both: one step, so concurrent admissions on several replicas cannot both pass.
# KEYS: the key's recent-requests set, its running set. ARGV: now, rpm (0: none), concurrency
# (0: none), token, lease expiry, window. A running set needs no expiry of its own: its members
# expire by score, and Redis drops a set once it is empty.
ADMIT = """
local now, rpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local token, expires, window = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if rpm > 0 and redis.call('ZCARD', KEYS[1]) >= rpm then
  return {'rpm', redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]}
end
if conc > 0 and redis.call('ZCARD', KEYS[2]) >= conc then
  return {'concurrency', tostring(redis.call('ZCARD', KEYS[2]))}
end
redis.call('ZADD', KEYS[1], now, token)
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
redis.call('ZADD', KEYS[2], expires, token)
return {'ok', token}
"""


@dataclass(frozen=True, slots=True)
class KeyLimit:
    """What a named key may do; `hash` names it in shared state."""

    name: str
    hash: str
    rpm: int | None
    concurrency: int | None


@dataclass(eq=False, slots=True)
class KeyTicket:
    """One admitted request's place in its key's limits, given back when the request ends."""

    key: str  # the key's hash
    token: str
    shared: bool = False


def refused(limit: KeyLimit, why: str, detail: float, now: float) -> RateLimited:
    """The 429 for a request over a key's limit; `detail` is the oldest request of the window
    (rpm) or how many run (concurrency)."""
    if why == "rpm":
        wait = max(1, math.ceil(detail + MINUTE - now))
        message = f"key {limit.name!r} is over its {limit.rpm} requests per minute"
        return RateLimited(message, code="key_rate_limited", retry_after=wait)
    message = f"key {limit.name!r} already has {int(detail)} requests running"
    return RateLimited(message, code="key_concurrency", retry_after=1)


@dataclass(slots=True)
class LocalKeyLimits:
    """Limits counted in this process (one relay, or Redis unreachable)."""

    _recent: dict[str, deque[float]] = field(default_factory=dict)
    _running: dict[str, set[str]] = field(default_factory=dict)

    def admit(self, limit: KeyLimit, now: float) -> KeyTicket:
        recent = self._recent.setdefault(limit.hash, deque())
        while recent and recent[0] <= now - MINUTE:
            recent.popleft()
        running = self._running.setdefault(limit.hash, set())
        if limit.rpm is not None and len(recent) >= limit.rpm:
            raise refused(limit, "rpm", recent[0], now)
        if limit.concurrency is not None and len(running) >= limit.concurrency:
            raise refused(limit, "concurrency", len(running), now)
        ticket = KeyTicket(limit.hash, uuid.uuid4().hex)
        recent.append(now)
        running.add(ticket.token)
        return ticket

    def release(self, ticket: KeyTicket) -> None:
        self._running.get(ticket.key, set()).discard(ticket.token)


class RedisKeyLimits:
    """Limits counted in Redis for every replica; leases of running requests are renewed by their
    replica and expire with it."""

    def __init__(self, client: Redis, prefix: str, lease_seconds: float) -> None:
        self.client = client
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self._admit = client.register_script(ADMIT)
        self._running: dict[str, KeyTicket] = {}

    def _keys(self, key: str) -> list[str]:
        return [f"{self.prefix}:krecent:{key}", f"{self.prefix}:krunning:{key}"]

    async def admit(self, limit: KeyLimit, now: float) -> KeyTicket:
        """Raises RateLimited over a limit, RedisError/OSError when Redis cannot be asked."""
        token = uuid.uuid4().hex
        args: list[Any] = [now, limit.rpm or 0, limit.concurrency or 0, token, now + self.lease_seconds, MINUTE]
        verdict, detail = await self._admit(keys=self._keys(limit.hash), args=args)
        if verdict != "ok":
            raise refused(limit, str(verdict), float(detail), now)
        ticket = self._running[token] = KeyTicket(limit.hash, token, shared=True)
        return ticket

    async def release(self, ticket: KeyTicket) -> None:
        self._running.pop(ticket.token, None)
        await self.client.zrem(self._keys(ticket.key)[1], ticket.token)

    async def renew(self, expires: float) -> None:
        """Keep this replica's running requests counted (a request may outlast a lease)."""
        if not self._running:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for ticket in self._running.values():
                pipe.zadd(self._keys(ticket.key)[1], {ticket.token: expires}, xx=True)
            await pipe.execute()
