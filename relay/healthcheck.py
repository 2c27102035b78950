"""`python -m relay.healthcheck`: exit 0 when the relay in this container answers /health.

Docker runs it every 30 s, so it reads only PORT and ADDRESS (environment, then `.env`) with the
standard library instead of loading and validating every setting.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path


def _setting(name: str) -> str:
    if value := os.environ.get(name, "").strip():
        return value
    env_file = Path(".env")
    if env_file.is_file():
        for line in env_file.read_text(errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip().removeprefix("export ").strip().upper() == name:
                return value.strip().strip("\"'")
    return ""


def port() -> int:
    """PORT wins over the port part of ADDRESS, as in the relay itself."""
    raw = _setting("PORT") or _setting("ADDRESS").rpartition(":")[2] or "8080"
    return int(raw) if raw.isdigit() else 8080


def main() -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port()}/health", timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
