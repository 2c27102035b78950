"""What an upstream failure means for the account that got it (see the protocol notes' policy table)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from loguru import logger

from ..jsontext import loads
from .drift import DRIFT, KNOWN_ERRORS

# Without a reset time in a 429 we still must not hammer the account; claude.ai windows are hours long.
DEFAULT_RATE_LIMIT_SECONDS = 3600.0
# A Cloudflare challenge is about the IP or fingerprint and often clears in minutes.
CLOUDFLARE_COOLDOWN_SECONDS = 300.0
# A region/IP block rarely clears by itself; check again after a while rather than never.
REGION_COOLDOWN_SECONDS = 1800.0
# How claude.ai says a plan lacks a model ("This model isn't available on your plan", ...).
_UNAVAILABLE = re.compile(r"(not|n't|un)[ _-]?available")
# Upstream messages are shown to callers; keep them short.
MAX_MESSAGE_CHARS = 300


class Failure(StrEnum):
    """Classes of upstream failure; the pool turns each into an account state."""

    RATE_LIMITED = "rate_limited"
    INVALID = "invalid"
    DISABLED = "disabled"
    REGION = "region_blocked"
    CLOUDFLARE = "cloudflare"
    TRANSIENT = "transient"
    TIMEOUT = "timeout"  # no answer within the connect or read limit
    MODEL_UNAVAILABLE = "model_unavailable"  # the account's plan lacks the model; another may have it
    REJECTED = "rejected"  # the request itself was refused; not the account's fault


# Failures that another account may not have.
RETRYABLE = frozenset(
    {
        Failure.RATE_LIMITED,
        Failure.INVALID,
        Failure.DISABLED,
        Failure.REGION,
        Failure.CLOUDFLARE,
        Failure.TRANSIENT,
        Failure.TIMEOUT,
        Failure.MODEL_UNAVAILABLE,
    }
)


class UpstreamFailure(Exception):
    """A classified failure of one upstream call."""

    def __init__(self, kind: Failure, message: str, *, status: int | None = None, resets_at: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message[:MAX_MESSAGE_CHARS]
        self.status = status
        self.resets_at = resets_at

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    def cooldown_until(self, now: float) -> float | None:
        """When the account may serve again, for the failures that wear off."""
        if self.kind is Failure.RATE_LIMITED:
            return self.resets_at if self.resets_at and self.resets_at > now else now + DEFAULT_RATE_LIMIT_SECONDS
        if self.kind is Failure.CLOUDFLARE:
            return now + CLOUDFLARE_COOLDOWN_SECONDS
        if self.kind is Failure.REGION:
            return now + REGION_COOLDOWN_SECONDS
        return None

    def __repr__(self) -> str:
        return f"UpstreamFailure({self.kind.value}, {self.status}, {self.message!r})"


def _json(body: bytes) -> Any:
    try:
        return loads(body)
    except ValueError:
        return None


def _error_fields(doc: Any) -> tuple[str, str]:
    """(type, message) of an upstream error envelope, or empty strings."""
    if isinstance(doc, dict):
        err = doc.get("error", doc)
        if isinstance(err, dict):
            return str(err.get("type") or ""), str(err.get("message") or "")
        if isinstance(err, str):
            return "", err
    return "", ""


def _reset_time(message: str, headers: Mapping[str, str], now: float) -> float:
    """resetsAt (unix seconds) from the JSON-string message, else the reset header, else one hour.

    A reset time already past is no reset time: the account would come back at once and be
    refused again, so it counts as unknown."""
    inner = _json(message.encode()) if message.startswith("{") else None
    candidates: list[object] = []
    if isinstance(inner, dict):
        candidates.append(inner.get("resetsAt") or inner.get("resets_at"))
    candidates.append(headers.get("anthropic-ratelimit-unified-reset", ""))
    for value in candidates:
        try:
            when = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if when > now:
            return when
        if when > 0:
            logger.warning("claude.ai gave a rate limit reset in the past ({}); assuming one hour", int(when))
    return now + DEFAULT_RATE_LIMIT_SECONDS


def _looks_like_html(body: bytes, headers: Mapping[str, str]) -> bool:
    if "html" in headers.get("content-type", "").lower():
        return True
    head = body.lstrip()[:64].lower()
    return head.startswith((b"<!doctype", b"<html"))


def classify(status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> UpstreamFailure:
    """Read an error answer (status, headers, JSON or HTML body) and say what it means."""
    now = time.time() if now is None else now
    lower = {k.lower(): v for k, v in headers.items()}
    if 300 <= status < 400:
        return UpstreamFailure(Failure.CLOUDFLARE, "claude.ai redirected the request (Cloudflare challenge)", status=status)
    if lower.get("cf-mitigated", "").lower() == "challenge" or _looks_like_html(body, lower):
        return UpstreamFailure(Failure.CLOUDFLARE, "claude.ai answered with a Cloudflare challenge page", status=status)
    doc = _json(body)
    err_type, message = _error_fields(doc)
    if err_type not in KNOWN_ERRORS:
        shape = err_type or f"http {status} " + ("without an error type" if doc is not None else "not JSON")
        DRIFT.note("error", shape, body)
    text = message.lower()
    if status == 429 or err_type == "rate_limit_error":
        return UpstreamFailure(
            Failure.RATE_LIMITED, "account usage limit reached", status=status, resets_at=_reset_time(message, lower, now)
        )
    if status == 401 or "invalid authorization" in text:
        return UpstreamFailure(Failure.INVALID, "sessionKey is invalid or expired", status=status)
    if "organization has been disabled" in text:
        return UpstreamFailure(Failure.DISABLED, "account organization has been disabled", status=status)
    if "unable to serve your request" in text:
        return UpstreamFailure(Failure.REGION, "claude.ai refused this region/IP", status=status)
    if status in (400, 403, 404) and _UNAVAILABLE.search(text) and (status == 403 or "model" in text):
        return UpstreamFailure(Failure.MODEL_UNAVAILABLE, message or "model not available on this account", status=status)
    if status == 403:
        return UpstreamFailure(Failure.INVALID, message or "permission denied for this sessionKey", status=status)
    if status >= 500 or "overloaded" in err_type:
        return UpstreamFailure(Failure.TRANSIENT, message or f"claude.ai answered {status}", status=status)
    return UpstreamFailure(Failure.REJECTED, message or f"claude.ai answered {status}", status=status)


def classify_stream_error(err_type: str, message: str) -> UpstreamFailure:
    """An `error` event inside the completion stream."""
    if err_type not in KNOWN_ERRORS:
        DRIFT.note("error", err_type or "stream error without a type", message)
    text = f"{err_type} {message}".lower()
    if "rate_limit" in text or "exceeded_limit" in text:
        return UpstreamFailure(
            Failure.RATE_LIMITED, "account usage limit reached", resets_at=_reset_time(message, {}, time.time())
        )
    if "overloaded" in text or "api_error" in text or not err_type:
        return UpstreamFailure(Failure.TRANSIENT, message or "claude.ai is overloaded")
    return UpstreamFailure(Failure.REJECTED, message or err_type)


def org_flag_failure(active_flags: Any, now: float | None = None) -> UpstreamFailure | None:
    """An unexpired `banned` flag on the chosen organization means the account is disabled."""
    now = time.time() if now is None else now
    for flag in active_flags if isinstance(active_flags, list) else []:
        if not isinstance(flag, dict) or "banned" not in str(flag.get("type", "")):
            continue
        expires = flag.get("expires_at")
        try:
            if expires and datetime.fromisoformat(str(expires)).timestamp() < now:
                continue
        except ValueError:
            pass
        return UpstreamFailure(Failure.DISABLED, "account is banned (organization flag)")
    return None
