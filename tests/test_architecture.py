"""The layers keep their promises: who may import whom, and where curl_cffi's internals are used."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from relay.apis import CLIENT_APIS as REGISTRY
from relay.claude.curl import missing_internals

ROOT = Path(__file__).resolve().parent.parent / "relay"
CLIENT_APIS = tuple(spec.package for spec in REGISTRY)
# What each folder may import from the rest of relay (top-level shared modules are always allowed
# unless listed here as forbidden).
FORBIDDEN = {
    "claude": ("relay.server", "relay.pool", "relay.chat", "relay.fallback", "relay.apis", *(f"relay.{a}" for a in CLIENT_APIS)),
    "pool": (
        "relay.server",
        "relay.chat",
        "relay.fallback",
        "relay.apis",
        "relay.claude.client",
        *(f"relay.{a}" for a in CLIENT_APIS),
    ),
    "chat": ("relay.server", "relay.fallback", "relay.apis", *(f"relay.{a}" for a in CLIENT_APIS)),
    **{api: ("relay.server", "relay.claude", "relay.pool", "relay.chat", "relay.fallback", "relay.apis") for api in CLIENT_APIS},
}


def _imports(path: Path) -> set[str]:
    """Absolute names of the relay modules a file imports."""
    package = ["relay", *path.relative_to(ROOT).parent.parts]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_import_only_downwards(folder: str) -> None:
    for path in (ROOT / folder).rglob("*.py"):
        bad = {name for name in _imports(path) for prefix in FORBIDDEN[folder] if name == prefix or name.startswith(prefix + ".")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_nothing_below_the_server_imports_it() -> None:
    for path in _modules():
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("server", "demo") or rel.name == "__main__.py":
            continue
        assert not {n for n in _imports(path) if n.startswith("relay.server")}, rel


def test_curl_cffi_is_used_only_in_the_claude_client() -> None:
    private = re.compile(r"\b(astream_task|quit_now|_WS_RECV_BUFFER_SIZE|STREAM_END)\b|\.queue\b")
    for path in _modules():
        rel = str(path.relative_to(ROOT))
        text = path.read_text()
        if any(n.startswith("curl_cffi") for n in _imports(path)):
            assert rel in ("claude/client.py", "claude/curl.py"), rel
        if private.search(text):
            assert rel == "claude/curl.py", f"{rel} reaches into curl_cffi internals"


def test_curl_cffi_still_has_the_internals_relay_relies_on() -> None:
    # If this fails after a curl_cffi upgrade, relay/claude/curl.py must be adapted.
    assert missing_internals() == []


# A module a reader takes in at one sitting, and functions that fit on a screen.
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50


def test_modules_and_functions_stay_small() -> None:
    too_long: list[str] = []
    for path in _modules():
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.end_lineno is None:
                continue
            if (length := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                too_long.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def test_every_registered_client_api_has_its_folder_and_routes() -> None:
    for spec in REGISTRY:
        assert (ROOT / spec.package / "__init__.py").is_file(), spec.package
        assert spec.path.startswith("/") and spec.package in FORBIDDEN


def test_a_curl_cffi_without_those_internals_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from curl_cffi import Curl

    from relay.config import ConfigError, Settings
    from relay.server.app import create_app

    monkeypatch.delattr(Curl, "_WS_RECV_BUFFER_SIZE")
    with pytest.raises(ConfigError, match=r"lacks Curl\._WS_RECV_BUFFER_SIZE; install curl-cffi>=0\.16,<0\.17"):
        create_app(Settings(sessions="", apikey="k"))
