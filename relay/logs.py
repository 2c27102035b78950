"""loguru set-up; a last line of defence masks anything that looks like a secret."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

from loguru import logger

from .accounts import mask_key

if TYPE_CHECKING:
    from loguru import Record

_SESSION_KEY = re.compile(r"sk-ant-[a-z0-9]+-[A-Za-z0-9_\-]{8,}")


def configure_logging(level: str, secrets: list[str]) -> None:
    """One sink on stderr; session keys and the given secrets never reach it in full."""
    hidden = [s for s in secrets if len(s) >= 4]

    def scrub(record: Record) -> None:
        message = _SESSION_KEY.sub(lambda m: mask_key(m.group(0)), record["message"])
        for secret in hidden:
            message = message.replace(secret, "***")
        record["message"] = message

    logger.remove()
    logger.configure(patcher=scrub)
    logger.add(sys.stderr, level=level, format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}", backtrace=False, diagnose=False)
