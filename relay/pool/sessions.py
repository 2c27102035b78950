"""Where conversation sessions live: the point each answer left a claude.ai chat at (keyed by the
transcript digest, see `relay.chat.transcript`), and each kept chat with its account and when it
was last used, so that idle chats can be deleted. In this process, or in Redis for every replica.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:  # redis is imported only when STATE_URL is set
    from redis.asyncio import Redis

# Points kept in one process at the most (about 300 bytes each); the oldest go first.
MAX_POINTS = 50_000


class SessionPoint(BaseModel):
    """Where an answer left a chat: continue `conv` after its assistant message `parent`."""

    conv: str
    parent: str
    account: str  # Account.id, or "guest:<hash>" in mirror mode
    org: str


class KeptChat(BaseModel):
    """A claude.ai chat kept for a session: deleted once idle for SESSION_TTL."""

    conv: str
    account: str
    org: str
    last_used: float
    head: str  # the digest of the chat's newest point: continuing elsewhere is a branch


class MemorySessions:
    """Sessions in this process (kept in the conversations file beside STATE_FILE, if any)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._points: OrderedDict[str, tuple[float, SessionPoint]] = OrderedDict()
        self._chats: dict[str, KeptChat] = {}

    def find(self, digests: list[str], now: float) -> tuple[str, SessionPoint] | None:
        for digest in reversed(digests):
            kept = self._points.get(digest)
            if kept is not None and kept[0] > now:
                return digest, kept[1]
        return None

    def chat(self, conv: str) -> KeptChat | None:
        return self._chats.get(conv)

    def keep(self, digest: str, point: SessionPoint, now: float) -> None:
        self._points[digest] = (now + self.ttl, point)
        self._points.move_to_end(digest)
        while len(self._points) > MAX_POINTS:
            self._points.popitem(last=False)
        self._chats[point.conv] = KeptChat(conv=point.conv, account=point.account, org=point.org, last_used=now, head=digest)

    def forget(self, conv: str) -> None:
        self._chats.pop(conv, None)
        for digest in [d for d, (_, p) in self._points.items() if p.conv == conv]:
            del self._points[digest]

    def expired(self, before: float) -> list[KeptChat]:
        """Take out the chats idle since `before` (their points go with them)."""
        gone = [c for c in self._chats.values() if c.last_used <= before]
        for chat in gone:
            del self._chats[chat.conv]
        if gone:
            convs = {c.conv for c in gone}
            for digest in [d for d, (_, p) in self._points.items() if p.conv in convs]:
                del self._points[digest]
        return gone

    def open_by_account(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for chat in self._chats.values():
            counts[chat.account] = counts.get(chat.account, 0) + 1
        return counts

    def snapshot(self, now: float) -> dict[str, Any]:
        points = {d: [e, p.model_dump()] for d, (e, p) in self._points.items() if e > now}
        return {"points": points, "chats": {c: k.model_dump() for c, k in self._chats.items()}}

    def restore(self, saved: Any, now: float) -> None:
        if not isinstance(saved, dict):
            return
        try:
            for digest, (expires, point) in (saved.get("points") or {}).items():
                if expires > now:
                    self._points[digest] = (float(expires), SessionPoint.model_validate(point))
            for conv, chat in (saved.get("chats") or {}).items():
                self._chats[conv] = KeptChat.model_validate(chat)
        except (ValidationError, TypeError, ValueError):
            self._points.clear()
            self._chats.clear()


class RedisSessions:
    """Sessions in Redis: points expire by themselves; kept chats sit in one sorted set per
    account (scored by last use), so replicas share them and exactly one deletes an idle chat."""

    def __init__(self, client: Redis, prefix: str, ttl: float) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl

    def _point(self, digest: str) -> str:
        return f"{self.prefix}:sess:{digest}"

    def _chat(self, conv: str) -> str:
        return f"{self.prefix}:chat:{conv}"

    def _by_account(self, account: str) -> str:
        return f"{self.prefix}:chats:{account}"

    async def find(self, digests: list[str]) -> tuple[str, SessionPoint] | None:
        if not digests:
            return None
        found = await self.client.mget([self._point(d) for d in digests])
        for digest, text in reversed(list(zip(digests, found, strict=True))):
            if text:
                try:
                    return digest, SessionPoint.model_validate_json(text)
                except ValidationError:
                    continue
        return None

    async def chat(self, conv: str) -> KeptChat | None:
        text = await self.client.get(self._chat(conv))
        try:
            return KeptChat.model_validate_json(text) if text else None
        except ValidationError:
            return None

    async def keep(self, digest: str, point: SessionPoint, now: float) -> None:
        chat = KeptChat(conv=point.conv, account=point.account, org=point.org, last_used=now, head=digest)
        ttl_ms = math.ceil(self.ttl * 1000)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self._point(digest), point.model_dump_json(), px=ttl_ms)
            pipe.set(self._chat(point.conv), chat.model_dump_json(), px=2 * ttl_ms)
            pipe.zadd(self._by_account(point.account), {point.conv: now})
            pipe.sadd(f"{self.prefix}:session_accounts", point.account)
            await pipe.execute()

    async def forget(self, conv: str, account: str) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(self._by_account(account), conv)
            pipe.delete(self._chat(conv))
            await pipe.execute()

    async def expired(self, before: float) -> list[KeptChat]:
        """Claim the chats idle since `before`: a ZREM that removed it is this replica's claim."""
        gone: list[KeptChat] = []
        for account in map(str, await self.client.smembers(f"{self.prefix}:session_accounts")):
            for conv in map(str, await self.client.zrangebyscore(self._by_account(account), "-inf", before)):
                if await self.client.zrem(self._by_account(account), conv):
                    chat = await self.chat(conv)
                    await self.client.delete(self._chat(conv))
                    gone.append(chat or KeptChat(conv=conv, account=account, org="", last_used=0.0, head=""))
        return gone

    async def open_by_account(self, accounts: list[str]) -> dict[str, int]:
        async with self.client.pipeline(transaction=False) as pipe:
            for account in accounts:
                pipe.zcard(self._by_account(account))
            counts = await pipe.execute()
        return {a: int(n) for a, n in zip(accounts, counts, strict=True) if n}
