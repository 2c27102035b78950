"""Named client keys beside APIKEY: who spent the pool, and limits per key.

Keys are kept only as hashes: HMAC-SHA-256 under STATE_SECRET when it is set (a reader of Redis
or STATE_FILE cannot test guesses offline), plain SHA-256 otherwise. The key itself is shown once,
when the admin API makes it. Keys come from two places that never overwrite each other: the
CLIENT_KEYS file (read at start) and the state store (made through the admin API). Limits and
token budgets are counted by the state store, so they hold across replicas; the usage counters
shown per key (requests, estimated tokens) are this replica's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from ..errors import PermissionDenied
from .budgets import Budget, Budgets
from .key_limits import KeyLimit, KeyTicket
from .state import StateStore

# Unknown keys send relay to the shared store at most this often: a flood of made-up keys must not
# become a flood of Redis reads, and a key just made on another replica is found within this.
RESYNC_INTERVAL = 0.25
# Known keys are looked up in the shared store again at most this often, so that a key revoked,
# or given other limits or budgets, on another replica is seen here within it.
REFRESH_INTERVAL = 2.0
KEYED = "hmac-sha256:"


def digest(key: str, secret: str = "") -> str:
    """The hash a key is kept as: keyed with STATE_SECRET when there is one."""
    raw = key.encode("utf-8", "surrogateescape")
    if secret:
        return KEYED + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hashlib.sha256(raw).hexdigest()


class FileKey(BaseModel):
    """One entry of the CLIENT_KEYS file."""

    name: str
    key: str
    rpm: int | None = None
    concurrency: int | None = None
    models: list[str] | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None


# What an operator may set on a key (the admin API's PATCH takes any of them).
SETTINGS = ("rpm", "concurrency", "models", "daily_tokens", "monthly_tokens")


@dataclass(slots=True)
class ClientKey:
    """One named key: its hash, its limits and what it has used on this replica."""

    name: str
    hash: str
    rpm: int | None = None
    concurrency: int | None = None
    models: list[str] | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    source: Literal["admin", "file"] = "admin"
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    in_flight: int = 0

    @property
    def limit(self) -> KeyLimit:
        return KeyLimit(self.name, self.hash, self.rpm, self.concurrency)

    @property
    def budget(self) -> Budget:
        return Budget(self.name, self.hash, self.daily_tokens, self.monthly_tokens)

    def record(self) -> dict[str, Any]:
        """What the state store keeps: never the key."""
        return {"name": self.name, "hash": self.hash, **{s: getattr(self, s) for s in SETTINGS}}

    def apply(self, settings: dict[str, Any]) -> None:
        for name in SETTINGS:
            if name in settings:
                setattr(self, name, settings[name])

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "limits": {"rpm": self.rpm, "concurrency": self.concurrency, "models": self.models},
            "budget": {"daily_tokens": self.daily_tokens, "monthly_tokens": self.monthly_tokens},
            "usage": {
                "requests": self.requests,
                "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out,
                "in_flight": self.in_flight,
            },
        }


class ClientKeys:
    """The named keys of this relay and their limits."""

    def __init__(self, secret: str = "", clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._clock = clock
        self._stored: dict[str, ClientKey] = {}  # made through the admin API, as the store has them
        self._file: dict[str, ClientKey] = {}  # from CLIENT_KEYS; no store sync touches them
        self._looked_up_at = float("-inf")  # when an unknown key last sent us to the store
        self._synced_at = float("-inf")  # when the store's keys were last taken in

    def __len__(self) -> int:
        return len(self._stored) + len(self._file)

    @property
    def keys(self) -> list[ClientKey]:
        return sorted([*self._file.values(), *self._stored.values()], key=lambda k: k.name)

    def find(self, given: str) -> ClientKey | None:
        if not given:
            return None
        for hashed in dict.fromkeys((digest(given, self._secret), digest(given))):  # keyed, then made before STATE_SECRET
            if found := self._file.get(hashed) or self._stored.get(hashed):
                return found
        return None

    async def lookup(self, given: str, store: StateStore) -> ClientKey | None:
        """A key by its value as the store has it: one made on another replica is found after a
        look at the store, which unknown keys trigger at most once per RESYNC_INTERVAL; known
        keys are taken in again every REFRESH_INTERVAL (revoked or changed elsewhere)."""
        now = self._clock()
        found = self.find(given)
        if found is not None:
            if found.source == "file" or now - self._synced_at < REFRESH_INTERVAL:
                return found
            self._synced_at = now  # a store that cannot be read now is asked again after the interval
        elif now - self._looked_up_at < RESYNC_INTERVAL:
            return None
        else:
            self._looked_up_at = now
        return (await self.sync(store)).find(given)

    def named(self, name: str) -> ClientKey | None:
        return next((k for k in self.keys if k.name == name), None)

    def load(self, records: list[dict[str, Any]]) -> None:
        """Take in the stored keys (keeping the counters of those already known)."""
        fresh: dict[str, ClientKey] = {}
        for rec in records:
            if not isinstance(rec, dict) or not isinstance(rec.get("hash"), str) or not isinstance(rec.get("name"), str):
                continue
            key = self._stored.get(rec["hash"]) or ClientKey(rec["name"], rec["hash"])
            key.apply({s: rec.get(s) for s in SETTINGS})
            fresh[rec["hash"]] = key
        self._stored = fresh

    def load_file(self, path: str) -> None:
        """CLIENT_KEYS: a JSON list of {"name", "key", "rpm"?, "concurrency"?, "models"?,
        "daily_tokens"?, "monthly_tokens"?}."""
        self._file = {}
        for e in TypeAdapter(list[FileKey]).validate_python(json.loads(Path(path).read_text())):
            key = ClientKey(e.name, digest(e.key, self._secret), source="file")
            key.apply(e.model_dump(include=set(SETTINGS)))
            self._file[key.hash] = key

    def create(self, name: str, settings: dict[str, Any]) -> str:
        """A new key with its limits and budgets; returned once, kept only as its hash."""
        key = "rk-" + secrets.token_urlsafe(32)
        entry = ClientKey(name, digest(key, self._secret))
        entry.apply(settings)
        self._stored[entry.hash] = entry
        return key

    def delete(self, name: str) -> bool:
        """Revoke a key made through the admin API (CLIENT_KEYS' keys leave with the file)."""
        found = next((k for k in self._stored.values() if k.name == name), None)
        if found is not None:
            del self._stored[found.hash]
        return found is not None

    def records(self) -> list[dict[str, Any]]:
        return [k.record() for k in sorted(self._stored.values(), key=lambda k: k.name)]

    async def sync(self, store: StateStore) -> ClientKeys:
        """Take in the keys as the store has them now (another replica may have changed them); a
        store that cannot be read changes nothing."""
        records = await store.load_records("keys")
        if records is not None:
            self.load(records)
            self._synced_at = self._clock()
        return self

    async def save(self, store: StateStore) -> None:
        await store.save_records("keys", self.records())

    async def admit(self, key: ClientKey, model: str, store: StateStore) -> KeyTicket:
        """Count a request against the key's limits on every replica, or refuse it (429 with
        Retry-After for a limit or a used-up budget, 403 for a model the key may not use)."""
        if key.models is not None and model not in key.models:
            raise PermissionDenied(
                f"model {model!r} is not allowed for key {key.name!r}", param="model", code="model_not_allowed"
            )
        await Budgets(store.tallies).check(key.budget, self._clock())
        ticket = await store.admit_key(key.limit, self._clock())
        key.requests += 1
        key.in_flight += 1
        return ticket

    async def release(self, key: ClientKey, ticket: KeyTicket, store: StateStore, tokens_in: int, tokens_out: int) -> None:
        key.in_flight -= 1
        key.tokens_in += tokens_in
        key.tokens_out += tokens_out
        Budgets(store.tallies).spend(key.hash, tokens_in + tokens_out, self._clock())
        await store.release_key(ticket)
