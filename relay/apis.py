"""The registry of client APIs: which adapter answers on which path. Routes, the error shapes,
the layering test and the render test all read it, so adding a client API is its folder plus one
line here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .chat_api.adapter import ChatCompletions
from .client_api import ClientApi
from .config import Settings
from .messages_api.adapter import Messages
from .responses_api.adapter import Responses


@dataclass(frozen=True, slots=True)
class ClientApiSpec:
    """One client API: its folder under `relay/`, how to build its adapter, its chat path (under
    /v1, /hf/v1 and the mirror prefix) and, if it has one, its token-count path."""

    package: str
    make: Callable[[Settings], ClientApi[Any]]
    path: str
    count_path: str | None = None


CLIENT_APIS: tuple[ClientApiSpec, ...] = (
    ClientApiSpec("chat_api", lambda s: ChatCompletions(s.thinking_format, s.show_tool_activity), "/chat/completions"),
    ClientApiSpec("messages_api", lambda s: Messages(s.show_tool_activity), "/messages", "/messages/count_tokens"),
    ClientApiSpec("responses_api", lambda s: Responses(s.show_tool_activity, s.max_body_size), "/responses"),
)
