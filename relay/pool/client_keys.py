"""Named client keys beside APIKEY: who spent the pool, and limits per key.

Keys are kept only as SHA-256 hashes (in memory, STATE_FILE or Redis); the key itself is shown
once, when the admin API makes it. Limits: requests per minute, concurrent requests, allowed
models. Counters (requests, estimated tokens) are per replica.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PermissionDenied, RateLimited
from .state import StateStore

# Seconds of the requests-per-minute window.
MINUTE = 60.0


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(slots=True)
class ClientKey:
    """One named key: its hash, its limits and what it has used."""

    name: str
    hash: str
    rpm: int | None = None
    concurrency: int | None = None
    models: list[str] | None = None
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    in_flight: int = 0
    recent: deque[float] = field(default_factory=deque)

    def record(self) -> dict[str, Any]:
        """What the state store keeps: never the key."""
        return {"name": self.name, "hash": self.hash, "rpm": self.rpm, "concurrency": self.concurrency, "models": self.models}

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "limits": {"rpm": self.rpm, "concurrency": self.concurrency, "models": self.models},
            "usage": {
                "requests": self.requests,
                "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out,
                "in_flight": self.in_flight,
            },
        }


class ClientKeys:
    """The named keys of this relay and their limits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_hash: dict[str, ClientKey] = {}

    def __len__(self) -> int:
        return len(self._by_hash)

    @property
    def keys(self) -> list[ClientKey]:
        return sorted(self._by_hash.values(), key=lambda k: k.name)

    def find(self, given: str) -> ClientKey | None:
        return self._by_hash.get(digest(given)) if given else None

    def named(self, name: str) -> ClientKey | None:
        return next((k for k in self._by_hash.values() if k.name == name), None)

    def load(self, records: list[dict[str, Any]]) -> None:
        """Take in stored keys (keeping the counters of those already known)."""
        fresh: dict[str, ClientKey] = {}
        for rec in records:
            if not isinstance(rec, dict) or not isinstance(rec.get("hash"), str) or not isinstance(rec.get("name"), str):
                continue
            known = self._by_hash.get(rec["hash"])
            key = known or ClientKey(rec["name"], rec["hash"])
            key.rpm, key.concurrency, key.models = rec.get("rpm"), rec.get("concurrency"), rec.get("models")
            fresh[rec["hash"]] = key
        self._by_hash = fresh

    def load_file(self, path: str) -> None:
        """CLIENT_KEYS: a JSON list of {"name", "key", "rpm"?, "concurrency"?, "models"?}."""
        entries = json.loads(Path(path).read_text())
        if not isinstance(entries, list):
            raise TypeError("must hold a JSON list of keys")
        records = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not isinstance(entry.get("name"), str):
                raise TypeError('each entry needs a "name" and a "key"')
            records.append({**{k: v for k, v in entry.items() if k != "key"}, "hash": digest(entry["key"])})
        self.load([*records, *(k.record() for k in self._by_hash.values())])

    def create(self, name: str, rpm: int | None, concurrency: int | None, models: list[str] | None) -> str:
        """A new key; returned once, kept only as its hash."""
        key = "rk-" + secrets.token_urlsafe(32)
        entry = ClientKey(name, digest(key), rpm, concurrency, models)
        self._by_hash[entry.hash] = entry
        return key

    def delete(self, name: str) -> bool:
        found = self.named(name)
        if found is not None:
            del self._by_hash[found.hash]
        return found is not None

    def records(self) -> list[dict[str, Any]]:
        return [k.record() for k in self.keys]

    async def sync(self, store: StateStore) -> ClientKeys:
        """Take in the keys as the store has them now (another replica may have changed them)."""
        self.load(await store.load_records("keys"))
        return self

    async def save(self, store: StateStore) -> None:
        await store.save_records("keys", self.records())

    def admit(self, key: ClientKey, model: str) -> None:
        """Count a request against the key's limits, or refuse it (429 with Retry-After, or 403)."""
        if key.models is not None and model not in key.models:
            raise PermissionDenied(
                f"model {model!r} is not allowed for key {key.name!r}", param="model", code="model_not_allowed"
            )
        now = self._clock()
        while key.recent and key.recent[0] <= now - MINUTE:
            key.recent.popleft()
        if key.rpm is not None and len(key.recent) >= key.rpm:
            wait = max(1, int(key.recent[0] + MINUTE - now) + 1)
            raise RateLimited(
                f"key {key.name!r} is over its {key.rpm} requests per minute", code="key_rate_limited", retry_after=wait
            )
        if key.concurrency is not None and key.in_flight >= key.concurrency:
            raise RateLimited(
                f"key {key.name!r} already has {key.in_flight} requests running", code="key_concurrency", retry_after=1
            )
        key.recent.append(now)
        key.requests += 1
        key.in_flight += 1
