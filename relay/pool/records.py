"""What the state stores keep, as pydantic models: records round-trip through JSON (STATE_FILE,
Redis) and the HTTP views are built from the accounts, never stored."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from ..claude.failures import Failure
from ..reply import Window
from .account import Account, State


class StateRecord(BaseModel):
    """An account's durable state: what a restart or another replica must not forget."""

    state: State = State.ACTIVE
    failure: Failure | None = None
    reason: str = ""
    until: float | None = None
    org_id: str | None = None
    refused_since: float | None = None

    @classmethod
    def of(cls, account: Account) -> StateRecord:
        return cls(
            state=account.state,
            failure=account.failure,
            reason=account.reason,
            until=account.until,
            org_id=account.org_id,
            refused_since=account.refused_since,
        )

    def apply(self, account: Account) -> None:
        """Set the account's state from this record; its org id only if it has none."""
        account.state, account.failure, account.reason, account.until = self.state, self.failure, self.reason, self.until
        if self.refused_since is not None:
            account.refused_since = self.refused_since
        if self.org_id and not account.org_id:
            account.org_id = self.org_id


class WindowRecord(BaseModel):
    """One quota window as stored."""

    utilization: float
    resets_at: float | None = None
    status: str = "within_limit"


class UsageRecord(BaseModel):
    """An account's quota windows as replicas share them, and when they were read."""

    windows: dict[str, WindowRecord]
    updated_at: float | None = None

    @classmethod
    def of(cls, account: Account) -> UsageRecord:
        windows = {
            n: WindowRecord(utilization=w.utilization, resets_at=w.resets_at, status=w.status)
            for n, w in (account.usage or {}).items()
        }
        return cls(windows=windows, updated_at=account.usage_at)

    @classmethod
    def parse(cls, text: str) -> UsageRecord | None:
        """A stored record, or None when it is not one (written by another version, or damaged)."""
        try:
            return cls.model_validate_json(text)
        except ValidationError:
            return None

    def apply(self, account: Account) -> None:
        account.usage = {n: Window(w.utilization, w.resets_at, w.status) for n, w in self.windows.items()}
        account.usage_at = self.updated_at


class LearnedRecord(BaseModel):
    """What requests taught about an account beyond its state: transient failures in a row and the
    back-off they earned, models its plan lacks, optional upstream features it takes or refuses.
    Shared so that one replica does not try again what another has just learned."""

    streak: int = 0
    backoff_until: float | None = None
    models_unavailable: list[str] = []
    features: dict[str, bool] = {}

    @classmethod
    def of(cls, account: Account) -> LearnedRecord:
        return cls(
            streak=account.streak,
            backoff_until=account.backoff_until,
            models_unavailable=sorted(account.models_unavailable),
            features=dict(account.features),
        )

    def apply(self, account: Account) -> None:
        account.streak, account.backoff_until = self.streak, self.backoff_until
        account.models_unavailable = set(self.models_unavailable)
        account.features = dict(self.features)
