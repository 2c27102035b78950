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
    assert all(re.match(r"python:3\.\d+\.\d+-slim-\w+( |$)", f) for f in froms), "base images are pinned by version"
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
    for needle in (
        "build: .",
        "image: relay",
        "env_file: .env",
        '"8080:8080"',
        "restart: unless-stopped",
        "healthcheck:",
        'profiles: ["redis"]',
    ):
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
    files = {".": ROOT, "constraints.txt": ROOT / "constraints.txt"}
    return [str(files[a]) if a in files else a for a in args[args.index("install") + 1 :]]


async def test_container_install_and_cmd_start_a_working_relay(fake: Any, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = await asyncio.create_subprocess_exec(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        *_pip_install_args(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(install.communicate(), timeout=400)
    assert install.returncode == 0, out.decode()[-2000:]

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.lower() not in _example_env_lower()}
    env.update(_example_env())
    env.update({"SESSIONS": session_key(1), "APIKEY": "container-key", "CLAUDE_BASE_URL": fake_url(fake), "PORT": str(port)})
    cmd = json.loads(dict(_final_stage())["CMD"])
    cmd[0] = python
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, port)
            body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "from the container"}]}
            async with http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers={"Authorization": "Bearer container-key"}
            ) as r:
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


def test_dockerfile_gives_the_app_user_a_data_directory() -> None:
    runs = " ".join(arg for word, arg in _final_stage() if word == "RUN")
    assert "mkdir /data" in runs and "chown relay" in runs
    assert "-c constraints.txt" in " ".join(arg for word, arg in _instructions() if word == "RUN")


def test_compose_stop_period_outlasts_the_shutdown() -> None:
    from relay.__main__ import SHUTDOWN_TIMEOUT
    from relay.config import Settings

    grace = Settings.model_fields["shutdown_grace"].default
    for name in ("docker-compose.yml", "docker-compose.replicas.yml"):
        text = (ROOT / name).read_text()
        periods = [int(p) for p in re.findall(r"stop_grace_period: (\d+)s", text)]
        assert periods, f"{name} sets no stop_grace_period"
        # streams' grace, their cut (2 s), the connections' shutdown, then pending deletes (5 s)
        assert min(periods) > grace + 2 + SHUTDOWN_TIMEOUT + 5, name
        assert "read_only: true" in text and "no-new-privileges:true" in text and "cap_drop: [ALL]" in text


async def test_stop_during_a_stream_ends_it_with_one_error_frame_and_exits_0(fake: Any, tmp_path: Path) -> None:
    fake.script(session_key(1), text=" ".join(["word"] * 400), chunk_delay=0.02)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.lower() not in _example_env_lower()}
    env.update(
        {"SESSIONS": session_key(1), "APIKEY": "k", "CLAUDE_BASE_URL": fake_url(fake), "PORT": str(port), "SHUTDOWN_GRACE": "1"}
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "--env-file", "/nonexistent", env=env, cwd=tmp_path, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, port)
            body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "long"}], "stream": True}
            async with http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}
            ) as r:
                await r.content.readline()
                started = asyncio.get_running_loop().time()
                proc.terminate()  # what `docker stop` sends
                raw = (await r.read()).decode()
        await asyncio.wait_for(proc.wait(), timeout=20)
        took = asyncio.get_running_loop().time() - started
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0
    assert raw.count('data: {"error"') == 1 and "shutting down" in raw and "[DONE]" not in raw
    assert took < 1 + 2 + 5 + 5


async def test_ipv6_address_in_brackets_listens_on_both_stacks(fake: Any, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.lower() not in _example_env_lower()}
    env.update({"SESSIONS": session_key(1), "APIKEY": "k", "CLAUDE_BASE_URL": fake_url(fake), "ADDRESS": f"[::]:{port}"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "--env-file", "/nonexistent", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, port)
            async with http.get(f"http://[::1]:{port}/health") as r:
                assert r.status == 200
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    assert b"Traceback" not in err


async def test_unwritable_state_file_shows_in_health(make_relay: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    relay = await make_relay(state_file=str(blocker / "state.json"))
    async with aiohttp.ClientSession() as http, http.get(relay.url + "/health") as r:
        health = await r.json()
    assert health["status"] == "degraded" and "STATE_FILE cannot be written" in health["state_store"]


def test_healthcheck_reads_only_the_port(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _example_env_lower()}
    env.update({"PORT": str(free_port()), "SESSIONS": "not a cookie"})  # invalid settings do not matter to it
    done = subprocess.run([sys.executable, "-m", "relay.healthcheck"], env=env, cwd=tmp_path, capture_output=True, timeout=30)
    assert done.returncode == 1 and b"refused" in done.stderr.lower()  # nobody listens there; no settings error
