"""The access record of one request: filled in by handlers, written as one log line (and the
request metrics) by the error middleware."""

from __future__ import annotations

from dataclasses import dataclass

from ..logs import printable


@dataclass(slots=True)
class AccessLog:
    """What one request did, for its log line."""

    request_id: str
    started: float
    model: str = ""
    account: str = ""
    ttfb_ms: float | None = None
    outcome: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    attempts: int = 0
    session: str = ""  # continued, branched or fresh, with conversation sessions on

    def served_by(self, who: str, first_byte_at: float, attempts: int = 1) -> None:
        self.account = who
        self.attempts = attempts
        self.ttfb_ms = (first_byte_at - self.started) * 1000

    def fields(self) -> str:
        parts = [f"model={printable(self.model)}" if self.model else "", f"account={self.account}" if self.account else ""]
        if self.attempts > 1:
            parts.append(f"attempts={self.attempts}")
        if self.ttfb_ms is not None:
            parts.append(f"ttfb={self.ttfb_ms:.0f}ms")
        parts.append(f"session={self.session}" if self.session else "")
        parts.append(f"outcome={self.outcome}" if self.outcome else "")
        return " ".join(p for p in parts if p)
