"""loguru set-up; a last line of defence masks anything that looks like a secret."""

from __future__ import annotations

import json
import re
import sys
import traceback
from typing import TYPE_CHECKING

from loguru import logger

from .pool.account import mask_key

if TYPE_CHECKING:
    from loguru import Message, Record

_SESSION_KEY = re.compile(r"sk-ant-[a-z0-9]+-[A-Za-z0-9_\-]{8,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def printable(value: str) -> str:
    """A client-supplied value fit for a log line: control characters (CR/LF above all) escaped,
    so nobody can forge a line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}" if ord(m.group(0)) < 256 else f"\\u{ord(m.group(0)):04x}", value)


def _json_sink(message: Message) -> None:
    record = message.record
    line = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": record["message"],
        **{k: v for k, v in record["extra"].items() if isinstance(v, (str, int, float, bool))},
    }
    if record["exception"] is not None:
        line["exception"] = "".join(traceback.format_exception(*record["exception"])).rstrip()
    sys.stderr.write(json.dumps(line, ensure_ascii=False) + "\n")


def configure_logging(level: str, secrets: list[str], fmt: str = "text") -> None:
    """One sink on stderr (text or JSON lines); session keys and the given secrets never reach it in full."""
    hidden = [s for s in secrets if len(s) >= 4]

    def scrub(record: Record) -> None:
        message = _SESSION_KEY.sub(lambda m: mask_key(m.group(0)), record["message"])
        for secret in hidden:
            message = message.replace(secret, "***")
        record["message"] = message

    logger.remove()
    logger.configure(patcher=scrub)
    if fmt == "json":
        logger.add(_json_sink, level=level, backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr,
            level=level,
            format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}",
            backtrace=False,
            diagnose=False,
        )
