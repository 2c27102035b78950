"""The error hierarchy and its OpenAI wire shape; nothing here knows about aiohttp."""

from __future__ import annotations

import re
from typing import Any, ClassVar

# An error message quotes what the client sent at most this long (a 10 KB value must not come back
# whole), and is never longer than MAX_MESSAGE in all.
MAX_QUOTED = 64
MAX_MESSAGE = 600
# A quoted value opens after a non-word character (an apostrophe inside a word is no quote).
_QUOTED = re.compile(rf"(?<!\w)'([^']{{{MAX_QUOTED}}})[^']+'")


def shortened(message: str) -> str:
    """`message` with every long quoted value cut short, and cut as a whole past MAX_MESSAGE."""
    message = _QUOTED.sub(lambda m: f"'{m[1]}...'", message)
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


class RelayError(Exception):
    """An error with an HTTP status, answered as `{"error": {message, type, param, code}}`."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        message = shortened(message)
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The OpenAI error object."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(RelayError):
    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class AuthError(RelayError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(RelayError):
    status = 403
    type = "permission_error"
    default_code = "permission_denied"


class NotFound(RelayError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class MethodNotAllowed(RelayError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class RequestTimeout(RelayError):
    status = 408
    type = "invalid_request_error"
    default_code = "request_timeout"


class Conflict(RelayError):
    status = 409
    type = "invalid_request_error"
    default_code = "conflict"


class Unprocessable(RelayError):
    status = 422
    type = "invalid_request_error"
    default_code = "unprocessable"


class PayloadTooLarge(RelayError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(RelayError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limited"
    retryable = True


class UpstreamError(RelayError):
    status = 502
    type = "upstream_error"
    default_code = "upstream_error"
    retryable = True


class NoAccountAvailable(RelayError):
    status = 503
    type = "service_unavailable"
    default_code = "no_account_available"
    retryable = True


class UpstreamTimeout(RelayError):
    status = 504
    type = "upstream_error"
    default_code = "upstream_timeout"
    retryable = True
