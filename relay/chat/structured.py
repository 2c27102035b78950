"""Structured answers: the schema (or "a JSON object") as an instruction claude.ai's model follows,
then the answer checked before the client sees it: JSON taken out of fences and prose, parsed and
validated with jsonschema (Draft 2020-12). A first answer that fails gets one repair turn in the
same chat; the validator's words tell the model what to fix."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import orjson

from ..conversation import OutputFormat, ToolSpec
from ..errors import InvalidRequest, UpstreamError
from ..jsontext import loads
from ..reply import ToolCall
from .cpu_limit import CpuLimitExceeded, cpu_limit

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
TOO_DEEP = "the JSON (or the schema's references) nests too deeply to check"
TOO_SLOW = "the JSON took too long to check against the schema (a pattern that backtracks without end?)"
# CPU time one check may take; checks take milliseconds unless a pattern backtracks without end.
CHECK_CPU_SECONDS = 0.2
# A schema's size in bytes, and the CPU time its own check may take (once per request).
MAX_SCHEMA_BYTES = 256 * 1024
SCHEMA_CPU_SECONDS = 0.5
# Digests of schemas found valid, oldest first: checked once, not on every request.
_CHECKED: dict[bytes, None] = {}
MAX_CHECKED = 1024
# What a valid answer is cut into for a streaming client, in characters.
STREAM_PIECE = 64


class OutputInvalid(UpstreamError):
    """claude.ai's answer did not match the requested format, also after a repair turn."""

    default_code = "output_invalid"


def instruction(fmt: OutputFormat) -> str:
    """What the model is told, after the conversation, for a structured answer."""
    if fmt.schema is None:
        return "Answer with only a JSON object: no other text, no code fences."
    schema = json.dumps(fmt.schema, ensure_ascii=False)
    return f"Answer with only a JSON object that matches this JSON Schema, with no other text and no code fences:\n{schema}"


def check_schema(schema: dict[str, Any] | None, field: str) -> None:
    """A schema the validator cannot use is the client's mistake, said before anything is asked.
    Its size is bounded as OpenAI bounds structured-output schemas: checking a 9 MB one took 38 s
    with the event loop held."""
    if schema is None:
        return
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    text = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    if len(text) > MAX_SCHEMA_BYTES:
        raise InvalidRequest(f"{field}: the schema is {len(text)} bytes; at most {MAX_SCHEMA_BYTES}", param=field)
    digest = hashlib.sha256(text).digest()
    if digest in _CHECKED:  # agents send the same tools with every turn; a check takes milliseconds
        return
    try:
        with cpu_limit(SCHEMA_CPU_SECONDS):
            Draft202012Validator.check_schema(schema)
        _CHECKED[digest] = None
        if len(_CHECKED) > MAX_CHECKED:
            del _CHECKED[next(iter(_CHECKED))]
    except SchemaError as exc:
        raise InvalidRequest(f"{field}: not a valid JSON Schema: {exc.message}", param=field) from None
    except (CpuLimitExceeded, RecursionError):
        raise InvalidRequest(f"{field}: the schema is too large or too deep to check", param=field) from None


def extract(text: str) -> Any:
    """The JSON in an answer: the whole text, the inside of a code fence, or the outermost object."""
    candidates = [text.strip(), *(m.strip() for m in _FENCE.findall(text))]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return loads(candidate)
        except ValueError:
            continue
    raise ValueError("the answer is not JSON")


def problem(text: str, fmt: OutputFormat) -> tuple[str | None, str]:
    """(the JSON to answer with, "") when the answer matches, else (None, what is wrong)."""
    try:
        doc = extract(text)
    except ValueError as exc:
        return None, str(exc)
    if fmt.schema is None:
        if not isinstance(doc, dict):
            return None, "the answer must be a JSON object"
    elif (error := _first_error(fmt.schema, doc)) is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return None, f"at {where}: {error.message[:300]}"
    try:
        return json.dumps(doc, ensure_ascii=False), ""
    except RecursionError:
        return None, TOO_DEEP


def call_problem(call: ToolCall, tool: ToolSpec) -> str:
    """What is wrong with a strict tool's call (its arguments against the tool's schema), or ""."""
    error = _first_error(tool.parameters, json.loads(call.arguments))
    if error is None:
        return ""
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"the call to {tool.name} has invalid arguments at {where}: {error.message[:300]}"


def _first_error(schema: dict[str, Any], doc: Any) -> Any:
    """jsonschema's most relevant error for `doc`, or None. jsonschema is imported by the first
    request that needs it: a relay that never checks a schema does not hold it in memory."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError, best_match

    try:
        with cpu_limit(CHECK_CPU_SECONDS):
            return best_match(Draft202012Validator(schema).iter_errors(doc))
    except RecursionError:  # a document (or schema) nested deeper than the validator can walk
        return ValidationError(TOO_DEEP)
    except CpuLimitExceeded:
        return ValidationError(TOO_SLOW)


def repair_prompt(why: str, fmt: OutputFormat | None) -> str:
    if fmt is None:
        return f"That answer does not match the required format: {why}. Call the tool again with arguments that match its schema."
    return f"That answer does not match the required format: {why}. {instruction(fmt)}"
