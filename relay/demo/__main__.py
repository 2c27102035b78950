"""`python -m relay.demo --port 9000`: run the fake claude.ai alone (for benchmarks and experiments)."""

from __future__ import annotations

import argparse

from aiohttp import web

from .fake_claude import FakeClaude


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m relay.demo", description="fake claude.ai web API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every call")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between answer chunks")
    parser.add_argument("--chunks", type=int, default=None, help="generated answer length in chunks")
    args = parser.parse_args()
    fake = FakeClaude(chunk_delay=args.chunk_delay, latency=args.latency, chunks=args.chunks)
    web.run_app(fake.app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
