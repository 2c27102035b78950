"""`relay --demo`: the relay wired to a fake claude.ai on a free loopback port in the same process."""

from __future__ import annotations

from aiohttp import web

from ..config import Settings
from ..server.app import create_app
from .fake_claude import FakeClaude

# A little pacing so a newcomer sees the answer stream in.
DEMO_CHUNK_DELAY = 0.03


async def start_fake() -> tuple[web.AppRunner, str]:
    """The fake claude.ai on a free loopback port; (its runner, its origin)."""
    runner = web.AppRunner(FakeClaude(chunk_delay=DEMO_CHUNK_DELAY).app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def demo_app(settings: Settings) -> web.Application:
    """Start the fake upstream, then build the relay pointed at it; both stop together."""
    runner, url = await start_fake()
    relay_settings = settings.model_copy(update={"claude_base_url": url})
    app = create_app(relay_settings, reload_sessions=lambda: settings.sessions)

    async def stop_fake(_: web.Application) -> None:
        await runner.cleanup()

    app.on_cleanup.append(stop_fake)
    return app
