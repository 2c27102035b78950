"""Settings: claude2api's names, readable failures, and .env.example kept in step with the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from relay.config import ConfigError, Settings, load_settings
from tests.conftest import session_key

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def test_sessions_accept_key_and_key_with_org(tmp_path: Path) -> None:
    env = _env(tmp_path, f"SESSIONS={session_key(1)}, {session_key(2)}:3f2a9c4e-1111-2222-3333-444455556666 ,\n")
    settings = load_settings(env)
    assert [s.org_id for s in settings.sessions] == [None, "3f2a9c4e-1111-2222-3333-444455556666"]
    assert settings.sessions[0].key.get_secret_value() == session_key(1)
    assert settings.chat_delete is True and settings.max_chat_history_length == 10000
    assert settings.address == "0.0.0.0:8080" and settings.claude_base_url == "https://claude.ai"


def test_sid02_keys_are_accepted(tmp_path: Path) -> None:
    key = session_key(1).replace("sid01", "sid02")
    assert load_settings(_env(tmp_path, f"SESSIONS={key}\n")).sessions[0].key.get_secret_value() == key


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("SESSIONS=not-a-cookie", "SESSIONS"),
        ("ADDRESS=nowhere", "ADDRESS"),
        ("CHAT_DELETE=maybe", "CHAT_DELETE"),
        ("MAX_CHAT_HISTORY_LENGTH=-5", "MAX_CHAT_HISTORY_LENGTH"),
        ("CLAUDE_BASE_URL=ftp://x", "CLAUDE_BASE_URL"),
        ("ENABLE_MIRROR_API=true\nMIRROR_API_PREFIX=/", "MIRROR_API_PREFIX"),
    ],
)
def test_invalid_values_name_the_variable(tmp_path: Path, line: str, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_env(tmp_path, line + "\n"))
    assert name in str(info.value)
    assert "\n" not in str(info.value)


def test_environment_wins_over_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert load_settings(_env(tmp_path, "LOG_LEVEL=ERROR\n")).log_level == "DEBUG"


def test_port_wins_over_address() -> None:
    s = Settings(_env_file=None, address="127.0.0.1:9000", port=7860)  # type: ignore[call-arg]
    assert (s.host, s.listen_port) == ("127.0.0.1", 7860)


def _run_relay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k.upper() not in Settings.model_fields and k.lower() not in Settings.model_fields
    }
    return subprocess.run(
        [sys.executable, "-m", "relay", "--env-file", "/nonexistent", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "SESSIONS"),
        ({"SESSIONS": "garbage"}, "SESSIONS"),
        ({"SESSIONS": session_key(1)}, "APIKEY"),
        ({"SESSIONS": session_key(1), "APIKEY": "k", "MAX_BODY_SIZE": "ten"}, "MAX_BODY_SIZE"),
    ],
)
def test_start_up_refusals_are_one_readable_line(env: dict[str, str], needle: str) -> None:
    done = _run_relay(env)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in done.stderr
    assert session_key(1) not in done.stderr


def test_env_example_matches_settings() -> None:
    names = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    numbered = {n for n in names if re.fullmatch(r"FALLBACK_API_(NAME|URL|KEY|MODEL|TYPE)_1", n)}
    assert len(numbered) == 5, "every FALLBACK_API_*_1 variable is documented"
    names = (names - numbered) | {"FALLBACKS"}
    fields = {name.upper() for name in Settings.model_fields}
    assert names == fields, f"missing in .env.example: {fields - names}; unknown: {names - fields}"


def test_env_example_loads_with_its_defaults(tmp_path: Path) -> None:
    text = (ROOT / ".env.example").read_text().replace("SESSIONS=\n", f"SESSIONS={session_key(1)}\n")
    settings = load_settings(_env(tmp_path, text))
    defaults = Settings(_env_file=None, sessions=session_key(1))  # type: ignore[call-arg]
    assert settings == defaults
