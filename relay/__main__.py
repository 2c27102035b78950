"""Command line: `relay` / `python -m relay` [check [--complete]] [--demo] [--insecure-no-auth] [--env-file PATH]."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import sys
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from loguru import logger

from .config import ConfigError, Settings, load_settings
from .demo.server import demo_app, start_fake
from .logs import configure_logging
from .server.app import create_app
from .server.serve import serve

# Seconds connections get to finish after the app shut down (live streams already had
# SHUTDOWN_GRACE); with the deletes after it, a stop takes at most SHUTDOWN_GRACE + 12 s.
SHUTDOWN_TIMEOUT = 5.0


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="relay", description="OpenAI/Anthropic API over claude.ai web accounts")
    parser.add_argument(
        "command", nargs="?", choices=["check"], help="check: ask claude.ai about every account, print a verdict each, and exit"
    )
    parser.add_argument("--complete", action="store_true", help="check: also have each account answer one word")
    parser.add_argument("--demo", action="store_true", help="serve from a built-in fake claude.ai (no account needed)")
    parser.add_argument("--insecure-no-auth", action="store_true", help="allow an empty APIKEY (anyone can use the pool)")
    parser.add_argument("--env-file", default=".env", help="settings file read after the environment (default .env)")
    return parser.parse_args(argv)


def _fail(message: str) -> None:
    print(f"relay: {message}", file=sys.stderr)
    raise SystemExit(2)


def _settings(args: argparse.Namespace) -> Settings:
    if args.demo:
        from .demo import DEMO_SESSIONS

        base = load_settings(args.env_file)
        # The fake's address is known only once it listens; demo_app fills CLAUDE_BASE_URL in.
        return load_settings(
            args.env_file,
            sessions=DEMO_SESSIONS,
            apikey=base.apikey.get_secret_value() or "demo",
            enable_mirror_api=False,
        )
    settings = load_settings(args.env_file)
    if not settings.sessions:
        _fail("SESSIONS: is empty; set it to a comma list of claude.ai sessionKey cookies (or try `relay --demo`)")
    if not settings.apikey.get_secret_value() and not args.insecure_no_auth and args.command != "check":
        _fail(
            "APIKEY: is empty, so anyone who can reach the relay could use your accounts. "
            "Set APIKEY, or pass --insecure-no-auth if the relay is only reachable by you."
        )
    return settings


def main(argv: Sequence[str] | None = None) -> None:
    args = _args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        _fail(str(exc))
    # The demo key is printed on purpose; real keys are scrubbed from every log line.
    secrets = [] if args.demo else [settings.apikey.get_secret_value()]
    secrets.append(settings.admin_key.get_secret_value())
    secrets += [s.key.get_secret_value() for s in settings.sessions]
    secrets += [p for s in settings.sessions if s.proxy and (p := urlsplit(s.proxy.get_secret_value()).password)]
    secrets += [f.key.get_secret_value() for f in settings.fallbacks]
    if settings.proxy and (password := urlsplit(settings.proxy).password):
        secrets.append(password)
    configure_logging(settings.log_level, secrets, settings.log_format)
    if args.command == "check":
        raise SystemExit(asyncio.run(_check(settings, args)))
    if args.demo:
        print(f"relay demo: fake claude.ai upstream, API key {settings.apikey.get_secret_value()!r}", file=sys.stderr)
        print(
            f"relay demo: try  curl http://127.0.0.1:{settings.listen_port}/v1/chat/completions "
            f"-H 'Authorization: Bearer {settings.apikey.get_secret_value()}' -H 'Content-Type: application/json' "
            '-d \'{"model":"claude-sonnet-4-6","messages":[{"role":"user","content":"hi"}]}\'',
            file=sys.stderr,
        )
    _tune_malloc()
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
            runner.run(_serve(settings, args))
    except ConfigError as exc:  # e.g. a curl_cffi without the internals relay needs
        _fail(str(exc))


# glibc's mallopt parameter for the padding each heap growth asks the system for.
M_TOP_PAD = -2


def _tune_malloc() -> None:
    """No padding when glibc grows a heap: with a thousand streams the padded growths of many small
    heaps add up to megabytes of resident memory nothing uses (measured in bench/, section 3).
    A no-op where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_TOP_PAD, 0)


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when chosen or (auto) installed: it spends less CPU per relayed event."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("EVENT_LOOP=uvloop, but uvloop is not installed: pip install 'relay[speed]'") from None
        return None
    return uvloop.new_event_loop


async def _check(settings: Settings, args: argparse.Namespace) -> int:
    from .chat.check import run_check

    if not args.demo:
        return await run_check(settings, complete=args.complete)
    fake, url = await start_fake()
    try:
        return await run_check(settings.model_copy(update={"claude_base_url": url}), complete=args.complete)
    finally:
        await fake.cleanup()


async def _serve(settings: Settings, args: argparse.Namespace) -> None:
    if args.demo:
        app = await demo_app(settings)
    else:
        app = create_app(settings, reload_sessions=lambda: load_settings(args.env_file).sessions)
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    where = f"{settings.host}:{settings.listen_port}"
    logger.info("relay listening on {} with {} account(s), {} event loop", where, len(settings.sessions), loop)
    await serve(
        app,
        settings.host,
        settings.listen_port,
        header_timeout=settings.request_header_timeout,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )


if __name__ == "__main__":
    main()
