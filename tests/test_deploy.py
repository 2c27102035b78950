"""Deployment files: the Dockerfile's essentials, and its install steps and CMD run for real in a clean venv."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import fake_url, free_port, session_key, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_dockerfile_essentials() -> None:
    steps = _instructions()
    final = _final_stage()
    froms = [arg for word, arg in steps if word == "FROM"]
    assert all(re.match(r"python:3\.\d+-slim", f) for f in froms)
    runs = " ".join(arg for word, arg in steps if word == "RUN")
    assert len(froms) >= 2 or "--no-cache-dir" in runs
    assert "pip install --no-cache-dir" in runs
    users = [arg for word, arg in final if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("EXPOSE", "8080") in final
    health = [arg for word, arg in final if word == "HEALTHCHECK"]
    assert health and "relay.healthcheck" in health[0]
    assert json.loads(dict(final)["CMD"]) == ["python", "-m", "relay"]
    env_lines = " ".join(arg for word, arg in steps if word in ("ENV", "ARG"))
    assert not re.search(r"SESSIONS|APIKEY|sk-ant", env_lines), "no secrets may be baked into the image"


def test_dockerignore_keeps_secrets_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".git" in ignored


def test_compose_file_essentials() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for needle in ("build: .", "image: relay", "env_file: .env", '"8080:8080"', "restart: unless-stopped", "healthcheck:", 'profiles: ["redis"]'):
        assert needle in text


def _example_env() -> dict[str, str]:
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            name, _, value = line.partition("=")
            env[name] = value
    return env


def _pip_install_args() -> list[str]:
    """The Dockerfile's own pip install, aimed at this checkout instead of /src."""
    run = next(arg for word, arg in _instructions() if word == "RUN" and "pip install" in arg)
    args = shlex.split(run)
    args = [a for a in args if not a.startswith("--prefix")]
    return [str(ROOT) if a == "." else a for a in args[args.index("install") + 1 :]]


async def test_container_install_and_cmd_start_a_working_relay(fake: Any, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = await asyncio.create_subprocess_exec(
        python, "-m", "pip", "install", "--quiet", *_pip_install_args(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(install.communicate(), timeout=400)
    assert install.returncode == 0, out.decode()[-2000:]

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.lower() not in _example_env_lower()}
    env.update(_example_env())
    env.update({"SESSIONS": session_key(1), "APIKEY": "container-key", "CLAUDE_BASE_URL": fake_url(fake), "PORT": str(port)})
    cmd = json.loads(dict(_final_stage())["CMD"])
    cmd[0] = python
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, port)
            body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "from the container"}]}
            async with http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers={"Authorization": "Bearer container-key"}) as r:
                assert r.status == 200
                assert "from the container" in (await r.json())["choices"][0]["message"]["content"]
        health = subprocess.run([python, "-m", "relay.healthcheck"], env=env, timeout=30)
        assert health.returncode == 0
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode in (0, -15)
    assert session_key(1) not in err.decode() and "container-key" not in err.decode()


def _example_env_lower() -> set[str]:
    return {k.lower() for k in _example_env()}
