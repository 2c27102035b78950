"""README stays true: its Python examples run against `relay --demo`, and it names every setting and route."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from pathlib import Path

from relay.config import Settings
from relay.server.app import create_app
from tests.conftest import make_settings
from tests.test_cli import _relay

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
EXAMPLE_ORIGIN = "http://127.0.0.1:8080"


def _python_examples() -> list[str]:
    # The mirror example needs a real claude.ai cookie.
    return [b for b in re.findall(r"```python\n(.*?)```", README, re.DOTALL) if "your cookie" not in b]


async def test_python_examples_run_against_the_demo() -> None:
    examples = _python_examples()
    assert len(examples) >= 4
    async with _relay("--demo", env={}) as (port, _):
        for code in examples:
            out = io.StringIO()

            def run(src: str = code.replace(EXAMPLE_ORIGIN, f"http://127.0.0.1:{port}"), out: io.StringIO = out) -> None:
                with contextlib.redirect_stdout(out):
                    exec(compile(src, "README.md", "exec"), {})

            await asyncio.to_thread(run)
            assert "demo upstream" in out.getvalue(), code


def test_every_setting_and_route_is_documented() -> None:
    example = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    env_names = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    documented = {re.sub(r"_1$", "_n", n) for n in env_names}  # numbered settings are documented once, as _n
    missing = sorted(n for n in documented if f"`{n}`" not in README)
    assert not missing, f"README does not explain {missing}"
    unlisted = sorted(n.upper() for n in Settings.model_fields if n != "fallbacks" and n.upper() not in env_names)
    assert not unlisted, f".env.example does not list {unlisted}"  # FALLBACKS comes as FALLBACK_API_*_n
    app = create_app(make_settings("http://127.0.0.1:9"))
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None and r.method != "HEAD"}  # type: ignore[union-attr]
    undocumented = sorted(p for p in paths if not p.startswith("/hf/") and f"`{p}`" not in README and f" {p}`" not in README)
    assert not undocumented, f"README does not list {undocumented}"
