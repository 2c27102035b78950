"""`python -m relay.healthcheck`: exit 0 when the relay in this container answers /health."""

from __future__ import annotations

import sys
import urllib.request

from .config import ConfigError, load_settings


def main() -> int:
    try:
        port = load_settings().listen_port
    except ConfigError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
