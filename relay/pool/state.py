"""Where account state lives: this process (optionally kept in STATE_FILE), or Redis for replicas.

The pool decides what a failure means; a store only keeps and shares it, and picks the account
for each attempt atomically (across replicas, for Redis).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from loguru import logger

from ..claude.failures import Failure
from .account import Account, State

# Answers kept in this process for the Responses API's previous_response_id, at most.
MAX_KEPT_ANSWERS = 1000
# Where kept answers sit in STATE_FILE, beside the accounts (keyed by hashes, never this name).
ANSWERS_KEY = "_answers"
# What the admin API made, kept beside the accounts as `_added` (accounts, with their cookies:
# the file must stay private) and `_keys` (client keys, hashed).
RecordKind = Literal["added", "keys"]


@dataclass(eq=False, slots=True)
class Lease:
    """One attempt's hold on an account; `shared` when Redis issued it."""

    account: Account
    token: str
    shared: bool = False


class StateStore(ABC):
    """What the pool needs from wherever state lives."""

    #: Why the store is not working as configured (e.g. Redis unreachable), or None.
    degraded: str | None = None

    async def start(self, accounts: Callable[[], list[Account]]) -> None:
        """Bring earlier or shared state into the accounts (the pool's current list)."""

    @abstractmethod
    async def acquire(self, candidates: list[Account], now: float) -> Lease | None:
        """Take the candidate with the most quota headroom once its requests in flight are counted
        (`Account.score`), then the least recently used."""

    @abstractmethod
    async def release(self, lease: Lease) -> None: ...

    @abstractmethod
    async def save(self, account: Account, *, failed: bool, changed: bool) -> None:
        """Count a failure if `failed`; keep the account's state (already set on it) if `changed`.

        A state that did not change is never written: it may be stale, and writing it back would
        undo what another replica learned meanwhile."""

    async def save_org(self, account: Account) -> None:
        """Keep the account's discovered organization id."""

    async def save_usage(self, account: Account) -> None:
        """Share the account's quota windows (already set on it)."""

    async def refresh(self, accounts: list[Account]) -> None:
        """Update the accounts from shared state (no-op when this process is the only one)."""

    @abstractmethod
    async def load_records(self, kind: RecordKind) -> list[dict[str, Any]]:
        """What the admin API made: `added` accounts (with their cookies) or client `keys` (hashed)."""

    @abstractmethod
    async def save_records(self, kind: RecordKind, records: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    async def keep_answer(self, answer_id: str, data: bytes) -> None:
        """Keep a finished answer (Responses API) for `answer_ttl` seconds."""

    @abstractmethod
    async def load_answer(self, answer_id: str) -> bytes | None:
        """A kept answer, or None when it is unknown or expired."""

    async def close(self) -> None: ...


class MemoryStore(StateStore):
    """State in the Account objects of this process; with a path, kept across restarts in a file.

    Kept answers live in a bounded LRU; they go to the file when it is written and at shutdown.
    """

    def __init__(
        self, path: str | Path | None = None, *, answer_ttl: float = 3600.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path) if path else None
        self.answer_ttl = answer_ttl
        self._clock = clock
        self._accounts: Callable[[], list[Account]] = list
        self._answers: OrderedDict[str, tuple[float, str]] = OrderedDict()  # id -> (expiry, JSON text)
        self._records: dict[str, list[dict[str, Any]]] | None = None  # read from the file once

    async def start(self, accounts: Callable[[], list[Account]]) -> None:
        self._accounts = accounts
        if self.path is None:
            return
        if self.path.is_file():
            self._restore(self.path, accounts())
        self._write()  # finds out now, not at the first cooldown, whether the file can be written

    def _restore(self, path: Path, accounts: list[Account]) -> None:
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("STATE_FILE {} is unreadable, starting fresh: {}", path, exc)
            return
        saved = saved if isinstance(saved, dict) else {}
        restore(accounts, saved)
        now = self._clock()
        for answer_id, (expires, text) in (saved.get(ANSWERS_KEY) or {}).items():
            if expires > now:
                self._answers[answer_id] = (expires, text)

    async def load_records(self, kind: RecordKind) -> list[dict[str, Any]]:
        return list(self._saved_records().get(kind, []))

    async def save_records(self, kind: RecordKind, records: list[dict[str, Any]]) -> None:
        self._saved_records()[kind] = list(records)
        self._write()

    def _saved_records(self) -> dict[str, list[dict[str, Any]]]:
        if self._records is None:
            self._records = {}
            if self.path is not None and self.path.is_file():
                try:
                    saved = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    saved = {}
                for kind in ("added", "keys"):
                    found = saved.get("_" + kind) if isinstance(saved, dict) else None
                    self._records[kind] = [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []
        return self._records

    async def keep_answer(self, answer_id: str, data: bytes) -> None:
        self._answers[answer_id] = (self._clock() + self.answer_ttl, data.decode())
        while len(self._answers) > MAX_KEPT_ANSWERS:
            self._answers.popitem(last=False)

    async def load_answer(self, answer_id: str) -> bytes | None:
        kept = self._answers.get(answer_id)
        if kept is None or kept[0] <= self._clock():
            self._answers.pop(answer_id, None)
            return None
        self._answers.move_to_end(answer_id)
        return kept[1].encode()

    async def close(self) -> None:
        if self._answers:
            self._write()

    async def acquire(self, candidates: list[Account], now: float) -> Lease | None:
        if not candidates:
            return None
        account = min(candidates, key=lambda a: (-a.score(now), a.last_used))
        account.in_flight += 1
        account.requests += 1
        account.last_used = now
        return Lease(account, "")

    async def release(self, lease: Lease) -> None:
        lease.account.in_flight = max(0, lease.account.in_flight - 1)

    async def save(self, account: Account, *, failed: bool, changed: bool) -> None:
        # The counters already live on the account; only states and orgs go to the file.
        if changed:
            self._write()

    async def save_org(self, account: Account) -> None:
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        data: dict[str, Any] = {a.id: record(a) for a in self._accounts()}
        now = self._clock()
        data[ANSWERS_KEY] = {k: v for k, v in self._answers.items() if v[0] > now}
        for kind, records in (self._records or {}).items():
            if records:
                data["_" + kind] = records
        try:
            write_atomically(self.path, json.dumps(data, indent=1))
        except OSError as exc:
            if self.degraded is None:
                logger.warning("could not write STATE_FILE {}: {}", self.path, exc)
            self.degraded = f"STATE_FILE cannot be written ({exc.strerror or exc.__class__.__name__})"
        else:
            self.degraded = None


def record(account: Account) -> dict[str, Any]:
    """An account's durable state: what a restart or another replica must not forget."""
    return {
        "state": account.state.value,
        "failure": account.failure.value if account.failure else None,
        "reason": account.reason,
        "until": account.until,
        "org_id": account.org_id,
    }


def apply(account: Account, rec: dict[str, Any]) -> None:
    """Set an account's state from a record; an expired cooldown means active."""
    try:
        state = State(rec.get("state", "active"))
        failure = Failure(rec["failure"]) if rec.get("failure") else None
    except ValueError:
        return
    account.state, account.failure = state, failure
    account.reason = str(rec.get("reason") or "")
    account.until = float(rec["until"]) if rec.get("until") else None
    if rec.get("org_id") and not account.org_id:
        account.org_id = str(rec["org_id"])


def restore(accounts: list[Account], saved: dict[str, Any]) -> None:
    for account in accounts:
        rec = saved.get(account.id)
        if isinstance(rec, dict):
            apply(account, rec)
            logger.info("account {} restored as {}", account.alias, account.state.value)


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename over it: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
