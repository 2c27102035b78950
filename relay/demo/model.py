"""The demo's stand-in for Claude: a canned answer that follows relay's tool-call format, so the
demo and the tests see tool calls round-trip without a real model."""

from __future__ import annotations

import json
import re
from typing import Any

# How relay offers tools in a prompt (relay/tools.py); the demo plays a model that follows it.
_OFFERED_TOOL = re.compile(r"^- ([A-Za-z0-9_\-]+)(?: - .*)?\n  parameters \(JSON schema\): (\{.*\})$", re.MULTILINE)


def _example_value(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}.get(str(kind), "example")


def demo_reply(model: str, prompt: str) -> str:
    """The demo answer: calls the first offered tool once, else says what it is and echoes the last line."""
    tool = _OFFERED_TOOL.search(prompt)
    if tool and "[tool result (" not in prompt:
        schema = json.loads(tool[2])
        props = schema.get("properties") or {}
        args = {name: _example_value(props.get(name)) for name in schema.get("required") or []}
        return "Let me use a tool.\n<tool_call>" + json.dumps({"name": tool[1], "arguments": args}) + "</tool_call>"
    last = next((ln for ln in reversed(prompt.splitlines()) if ln.strip()), "")
    last = last.split(":", 1)[1].strip() if last.startswith(("Human:", "User:")) else last.strip()
    return (
        f"Hello from relay's demo upstream ({model}). This is not Claude: it is a local fake of claude.ai. You said: {last[:200]}"
    )
