"""JSON from others (a model's answer, claude.ai's bodies) read with the standard library."""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes) -> Any:
    """`json.loads`, where a document nested deeper than Python's json reads is the ValueError of
    any other invalid one (json raises RecursionError there, which callers would not expect)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
