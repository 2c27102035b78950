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


# How relay asks for a structured answer (relay/chat/structured.py); the demo answers in kind.
_JSON_ASKED = "Answer with only a JSON object"
_SCHEMA = re.compile(r"no code fences:\n(\{.*\})$", re.MULTILINE)
_REPAIRED = "does not match the required format"


def example(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value that matches a JSON Schema (enough of one for the demo and the tests)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 8:
        return "example"
    if isinstance(ref := schema.get("$ref"), str) and ref.startswith("#/"):
        target: Any = root
        for step in ref[2:].split("/"):
            target = target.get(step, {}) if isinstance(target, dict) else {}
        return example(target, root, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example(schema[key][0], root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "object" or "properties" in schema:
        return {name: example(sub, root, depth + 1) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example(schema.get("items", {}), root, depth + 1)]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(kind), "example")


def _structured(prompt: str) -> str:
    """A structured answer; directives in the conversation make it wrong first (`[fake:invalid-json-once]`),
    wrong every time (`[fake:invalid-json-always]`) or wrapped in prose and a fence (`[fake:fenced-json]`)."""
    schemas = _SCHEMA.findall(prompt)
    answer = json.dumps(example(json.loads(schemas[-1])) if schemas else {"answer": "demo"})
    if "[fake:invalid-json-always]" in prompt or ("[fake:invalid-json-once]" in prompt and _REPAIRED not in prompt):
        return 'Sure! {"not": "what you asked"'
    if "[fake:fenced-json]" in prompt:
        return f"Here is the object:\n```json\n{answer}\n```\nHope it helps."
    return answer


def demo_reply(model: str, prompt: str) -> str:
    """The demo answer: JSON when a structured answer is asked for; calls the first offered tool
    once; else says what it is and echoes the last line."""
    if _JSON_ASKED in prompt.rsplit("\n\n", 1)[-1]:
        return _structured(prompt)
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
