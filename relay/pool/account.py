"""One claude.ai account: its cookie (never shown in full) and what it has taught us."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ..claude.failures import Failure
from ..config import shown_proxy
from ..reply import Window


class State(StrEnum):
    ACTIVE = "active"
    COOLING = "cooling"  # rate limited until `until`
    INVALID = "invalid"  # cookie refused; only a reload brings it back
    DISABLED = "disabled"  # organization disabled or banned
    BLOCKED = "blocked"  # Cloudflare or region/IP block, retried after `until`
    DEAD = "dead"  # refused for longer than DEAD_ACCOUNT_TTL: out of rotation until checked or removed


# A request in flight is counted as using this share of a window: its cost is not known until it
# ends, and without it every concurrent request would go to the one account with the most room.
IN_FLIGHT_SHARE = 0.02

STATE_OF = {
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


def clock_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(eq=False, slots=True)
class Account:
    """One sessionKey and its learned state. The key never appears in repr or logs."""

    key: str
    alias: str
    org_id: str | None = None
    proxy: str | None = None  # the account's own proxy (PROXY when unset)
    retiring: bool = False  # being removed: gets no new request
    state: State = State.ACTIVE
    failure: Failure | None = None
    reason: str = ""
    until: float | None = None
    # When claude.ai first refused the account (invalid, disabled) with no answer since.
    refused_since: float | None = None
    requests: int = 0
    failures: int = 0
    # Requests in flight on this account: this replica's, and all replicas' as the store shares
    # them (the same number when nothing is shared).
    in_flight_here: int = 0
    in_flight_all: int = 0
    last_error: str = ""
    last_used: float = 0.0
    # Optional upstream features by name (relay.chat.features): True works, False refused, absent not known yet.
    features: dict[str, bool] = field(default_factory=dict)
    # Transient failures (timeouts, resets, 5xx) in a row, and until when the account is avoided for them.
    streak: int = 0
    backoff_until: float | None = None
    # Models claude.ai said this account's plan lacks; requests for them go to other accounts.
    models_unavailable: set[str] = field(default_factory=set)
    # Quota windows as claude.ai last reported them (stream ends, /usage), and when.
    usage: dict[str, Window] | None = None
    usage_at: float | None = None
    open_sessions: int = 0  # kept chats of conversation sessions (all replicas'), as last counted
    id: str = field(init=False, default="")

    def __repr__(self) -> str:
        return f"Account({self.alias}, {self.masked}, {self.state.value})"

    def __post_init__(self) -> None:
        # A stable name for shared state that reveals nothing of the key.
        self.id = hashlib.sha256(self.key.encode()).hexdigest()[:16]

    @property
    def masked(self) -> str:
        return mask_key(self.key)

    def cooled_down(self, now: float) -> bool:
        """A cooldown that has passed: the pool brings the account back (see AccountPool.revive)."""
        return self.state in (State.COOLING, State.BLOCKED) and self.until is not None and self.until <= now

    def usable(self, now: float) -> bool:
        """Active, or due back from a cooldown; changes nothing."""
        return self.state is State.ACTIVE or self.cooled_down(now)

    def headroom(self, now: float) -> float:
        """What is left of the tightest quota window, 0..1; all of it while nothing is known."""
        return min((w.room(now) for w in (self.usage or {}).values()), default=1.0)

    def score(self, now: float) -> float:
        """Headroom less what the requests in flight will use (their cost is not known yet)."""
        return self.headroom(now) - self.in_flight_all * IN_FLIGHT_SHARE

    def healthy(self, now: float) -> bool:
        """Usable and not backing off after transient failures."""
        return self.usable(now) and (self.backoff_until is None or self.backoff_until <= now)

    def view(self) -> dict[str, Any]:
        """What `/v1/accounts` shows: no full key."""
        return {
            "alias": self.alias,
            "key": self.masked,
            "org_id": self.org_id,
            "proxy": shown_proxy(self.proxy) if self.proxy else None,
            "state": self.state.value,
            "reason": self.reason or None,
            "cooldown_until": self.until,
            "refused_since": self.refused_since,
            "requests": self.requests,
            "failures": self.failures,
            "in_flight": self.in_flight_all,
            "in_flight_here": self.in_flight_here,
            "last_error": self.last_error or None,
            "last_used": self.last_used or None,
            "consecutive_failures": self.streak,
            "backoff_until": self.backoff_until,
            "usage": self._usage_view(),
            "models_unavailable": sorted(self.models_unavailable),
            "open_sessions": self.open_sessions,
        }

    def _usage_view(self) -> dict[str, Any] | None:
        if self.usage is None:
            return None
        windows: dict[str, Any] = {
            name: {"utilization": w.utilization, "resets_at": w.resets_at, "status": w.status}
            for name, w in sorted(self.usage.items())
        }
        return {**windows, "updated_at": self.usage_at}
