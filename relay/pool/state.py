"""Where account state lives: this process (optionally kept in STATE_FILE), or Redis for replicas.

The pool decides what a failure means; a store only keeps and shares it, and picks the account
for each attempt atomically (across replicas, for Redis).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from loguru import logger
from pydantic import ValidationError

from .account import Account
from .kept_answers import KeptAnswers
from .key_limits import KeyLimit, KeyTicket, LocalKeyLimits
from .records import StateRecord
from .sealing import Sealer, SealError, is_sealed
from .sessions import KeptChat, MemorySessions, SessionPoint
from .state_file import ANSWERS_WRITE_INTERVAL, StateFile
from .tallies import MemoryTallies, Tallies

# Answers kept in this process for the Responses API's previous_response_id, at most.
# Where kept answers sit in STATE_FILE, beside the accounts (keyed by hashes, never this name).
ANSWERS_KEY = "_answers"
# What the admin API made, kept beside the accounts as `_added` (accounts, with their cookies:
# the file must stay private) and `_keys` (client keys, hashed).
RecordKind = Literal["added", "keys"]
RECORD_KINDS: tuple[RecordKind, ...] = ("added", "keys")


@dataclass(eq=False, slots=True)
class Lease:
    """One attempt's hold on an account; `shared` when Redis issued it."""

    account: Account
    token: str
    shared: bool = False


class StateStore(ABC):
    """What the pool needs from wherever state lives."""

    #: Counters over time (usage history, key budgets).
    tallies: Tallies

    @property
    def degraded(self) -> str | None:
        """Why the store is not working as configured (e.g. Redis unreachable), or None."""
        return None

    @property
    def keeps_sessions(self) -> bool:
        """Sessions outlive this process (else shutdown deletes their chats)."""
        return False

    @property
    def secrets_refused(self) -> str | None:
        """Why the store will not keep an added account's cookie (no STATE_SECRET to encrypt it
        with, and STATE_PLAINTEXT not set), or None."""
        return None

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

    async def save_learned(self, account: Account) -> None:
        """Share what requests taught about the account (back-off, models, features)."""

    async def refresh(self, accounts: list[Account]) -> None:
        """Update the accounts from shared state (no-op when this process is the only one)."""

    @abstractmethod
    async def load_records(self, kind: RecordKind) -> list[dict[str, Any]] | None:
        """What the admin API made: `added` accounts (with their cookies) or client `keys` (hashed);
        None when the store cannot say now (then callers keep what they know)."""

    @abstractmethod
    async def save_records(self, kind: RecordKind, records: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    async def keep_answer(self, answer_id: str, data: bytes) -> None:
        """Keep a finished answer (Responses API) for `answer_ttl` seconds."""

    @abstractmethod
    async def load_answer(self, answer_id: str) -> bytes | None:
        """A kept answer, or None when it is unknown or expired."""

    # -- conversation sessions (relay.chat.sessions) --------------------------------------------

    @abstractmethod
    async def find_session(self, digests: list[str], now: float) -> tuple[str, SessionPoint] | None:
        """The latest of these transcript digests that an earlier answer left a chat at."""

    @abstractmethod
    async def session_chat(self, conv: str) -> KeptChat | None: ...

    @abstractmethod
    async def keep_session(self, digest: str, point: SessionPoint, now: float) -> None:
        """Remember where an answer left its chat, and that the chat was used now."""

    @abstractmethod
    async def forget_chat(self, conv: str, account: str) -> None:
        """The chat is gone (refused, or deleted): no session continues it."""

    @abstractmethod
    async def expired_chats(self, before: float) -> list[KeptChat]:
        """Take out the kept chats idle since `before`, for deletion (each by one replica only)."""

    @abstractmethod
    async def open_sessions(self, accounts: list[str]) -> dict[str, int]:
        """Kept chats per account id."""

    @abstractmethod
    async def admit_key(self, limit: KeyLimit, now: float) -> KeyTicket:
        """Count a named key's request against its limits (every replica's), or raise RateLimited."""

    @abstractmethod
    async def release_key(self, ticket: KeyTicket) -> None: ...

    async def close(self) -> None: ...


class MemoryStore(StateStore):
    """State in the Account objects of this process; with a path, kept across restarts in a file
    (written off the event loop, see `state_file`).

    Kept answers live in a bounded LRU, and in a file of their own beside STATE_FILE.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        answer_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
        sealer: Sealer | None = None,
        plaintext: bool = False,
        session_ttl: float = 3600.0,
    ) -> None:
        self.answer_ttl = answer_ttl
        self.sessions = MemorySessions(session_ttl)
        self.sealer = sealer
        self.plaintext = plaintext
        self._clock = clock
        self._accounts: Callable[[], list[Account]] = list
        self._answers = KeptAnswers(answer_ttl, clock)
        self._records: dict[str, list[dict[str, Any]]] = {}
        self.key_limits = LocalKeyLimits()
        self.tallies: MemoryTallies = MemoryTallies(Path(f"{path}.usage") if path else None, clock)
        self._file = StateFile(Path(path), self._state_snapshot) if path else None
        self._answers_file = (
            StateFile(Path(f"{path}.answers"), self._answers_snapshot, min_interval=ANSWERS_WRITE_INTERVAL) if path else None
        )
        if self._file is not None and self._answers_file is not None:
            self._file.remove_leftovers()
            self._answers_file.remove_leftovers()
            self._take_records(self._file.read())

    @property
    def degraded(self) -> str | None:
        problem = self._file.problem if self._file is not None else None
        return f"STATE_FILE {problem}" if problem else None

    @property
    def secrets_refused(self) -> str | None:
        if self._file is None or self.sealer is not None or self.plaintext:
            return None
        return "STATE_FILE would keep the cookie unencrypted"

    async def start(self, accounts: Callable[[], list[Account]]) -> None:
        self._accounts = accounts
        if self._file is None or self._answers_file is None:
            return
        saved = self._file.read()
        restore(accounts(), saved)
        now = self._clock()
        conversations = self._opened(self._answers_file.read())
        self.sessions.restore(conversations.get("sessions"), now)
        # Answers kept by an older relay inside STATE_FILE, or in the file's older shape, too.
        for answers in (saved.get(ANSWERS_KEY), conversations.get("answers", conversations)):
            for answer_id, kept in (answers or {}).items():
                if isinstance(kept, list) and len(kept) == 2 and kept[0] > now:
                    self._answers.restore(answer_id, float(kept[0]), str(kept[1]))
        await self._file.write_now()  # finds out now, not at the first cooldown, whether the file can be written

    def _take_records(self, saved: dict[str, Any]) -> None:
        for kind in RECORD_KINDS:
            found = opened_records(saved.get("_" + kind), self.sealer)
            self._records[kind] = found or []

    def _state_snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = {a.id: StateRecord.of(a).model_dump(mode="json") for a in self._accounts()}
        for kind in RECORD_KINDS:
            if records := self._records.get(kind):
                data["_" + kind] = sealed_records(kind, records, self.sealer)
        return data

    def _answers_snapshot(self) -> dict[str, Any]:
        """Kept answers and sessions: what conversations need across a restart."""
        now = self._clock()
        answers = self._answers.snapshot(now)
        doc = {"answers": answers, "sessions": self.sessions.snapshot(now)}
        return {"sealed": self.sealer.seal(json.dumps(doc).encode())} if self.sealer else doc

    def _opened(self, saved: dict[str, Any]) -> dict[str, Any]:
        """The answers file as written: sealed whole under STATE_SECRET, or plain."""
        if not isinstance(sealed := saved.get("sealed"), str):
            return saved
        try:
            assert self.sealer is not None
            answers = json.loads(self.sealer.open(sealed))
        except (AssertionError, SealError, ValueError):
            logger.warning("kept answers are sealed with another STATE_SECRET; starting without them")
            return {}
        return answers if isinstance(answers, dict) else {}

    def _changed(self) -> None:
        if self._file is not None:
            self._file.dirty()

    async def load_records(self, kind: RecordKind) -> list[dict[str, Any]]:
        return list(self._records.get(kind, []))

    async def save_records(self, kind: RecordKind, records: list[dict[str, Any]]) -> None:
        if self._records.get(kind) != records:
            self._records[kind] = list(records)
            self._changed()

    async def keep_answer(self, answer_id: str, data: bytes) -> None:
        self._answers.keep(answer_id, data.decode())
        if self._answers_file is not None:
            self._answers_file.dirty()

    async def load_answer(self, answer_id: str) -> bytes | None:
        kept = self._answers.load(answer_id)
        return kept.encode() if kept is not None else None

    async def close(self) -> None:
        await self.tallies.close()
        for file in (self._file, self._answers_file):
            if file is not None:
                await file.flush()

    async def acquire(self, candidates: list[Account], now: float) -> Lease | None:
        if not candidates:
            return None
        account = min(candidates, key=lambda a: (-a.score(now), a.last_used))
        account.in_flight_here += 1
        account.in_flight_all += 1
        account.requests += 1
        account.last_used = now
        return Lease(account, "")

    async def release(self, lease: Lease) -> None:
        lease.account.in_flight_here = max(0, lease.account.in_flight_here - 1)
        lease.account.in_flight_all = max(0, lease.account.in_flight_all - 1)

    async def save(self, account: Account, *, failed: bool, changed: bool) -> None:
        # The counters already live on the account; only states and orgs go to the file.
        if changed:
            self._changed()

    async def save_org(self, account: Account) -> None:
        self._changed()

    async def find_session(self, digests: list[str], now: float) -> tuple[str, SessionPoint] | None:
        return self.sessions.find(digests, now)

    async def session_chat(self, conv: str) -> KeptChat | None:
        return self.sessions.chat(conv)

    async def keep_session(self, digest: str, point: SessionPoint, now: float) -> None:
        self.sessions.keep(digest, point, now)
        if self._answers_file is not None:
            self._answers_file.dirty()

    async def forget_chat(self, conv: str, account: str) -> None:
        self.sessions.forget(conv)

    async def expired_chats(self, before: float) -> list[KeptChat]:
        return self.sessions.expired(before)

    async def open_sessions(self, accounts: list[str]) -> dict[str, int]:
        return self.sessions.open_by_account()

    @property
    def keeps_sessions(self) -> bool:
        """Sessions outlive this process (then shutdown leaves their chats for the next one)."""
        return self._file is not None

    async def admit_key(self, limit: KeyLimit, now: float) -> KeyTicket:
        return self.key_limits.admit(limit, now)

    async def release_key(self, ticket: KeyTicket) -> None:
        self.key_limits.release(ticket)


def sealed_records(kind: RecordKind, records: list[dict[str, Any]], sealer: Sealer | None) -> Any:
    """Added accounts (cookies, proxy passwords) are sealed under STATE_SECRET; key records hold
    only names, limits and hashes."""
    if kind == "added" and sealer is not None:
        return sealer.seal(json.dumps(records).encode())
    return records


def opened_records(found: Any, sealer: Sealer | None) -> list[dict[str, Any]] | None:
    """Records as a store kept them (sealed or plain); None when they cannot be read."""
    if isinstance(found, str) and is_sealed(found):
        if sealer is None:
            logger.warning("added accounts are sealed but STATE_SECRET is not set; they are not taken in")
            return None
        try:
            found = json.loads(sealer.open(found))
        except (SealError, ValueError) as exc:
            logger.warning("added accounts could not be read: {}", exc)
            return None
    return [r for r in found if isinstance(r, dict)] if isinstance(found, list) else None


def restore(accounts: list[Account], saved: dict[str, Any]) -> None:
    """Accounts' states as a file kept them; records that do not validate are skipped."""
    for account in accounts:
        rec = saved.get(account.id)
        if not isinstance(rec, dict):
            continue
        try:
            StateRecord.model_validate(rec).apply(account)
        except ValidationError:
            continue
        logger.info("account {} restored as {}", account.alias, account.state.value)
