"""The claude.ai web API's paths, headers and request bodies, and how its answers are read.

Pure functions; the I/O lives in `client.py`, the stream's events are read in `events.py`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..jsontext import loads
from ..reply import Window
from .failures import Failure, UpstreamFailure, classify, org_flag_failure

# The web app sends this parent for the first turn of a new conversation.
ROOT_PARENT_UUID = "00000000-0000-4000-8000-000000000000"


def orgs_path() -> str:
    return "/api/organizations"


def conversations_path(org: str) -> str:
    return f"/api/organizations/{org}/chat_conversations"


def conversation_path(org: str, conv: str) -> str:
    return f"/api/organizations/{org}/chat_conversations/{conv}"


def completion_path(org: str, conv: str) -> str:
    return f"/api/organizations/{org}/chat_conversations/{conv}/completion"


def upload_path(org: str) -> str:
    # The legacy upload route has no `organizations/` segment.
    return f"/api/{org}/upload"


def base_headers(origin: str) -> dict[str, str]:
    """Headers the web app sends on every call; the User-Agent comes from the impersonated browser."""
    return {
        "Origin": origin,
        "Referer": f"{origin}/new",
        "Accept": "application/json",
        "Accept-Language": "en-US,en;q=0.9",
        "anthropic-client-platform": "web_claude_ai",
    }


def usage_path(org: str) -> str:
    return f"/api/organizations/{org}/usage"


# /usage names its windows in words; the stream's message_limit in short. relay shows the short ones.
_WINDOW_NAMES = {"five_hour": "5h", "seven_day": "7d", "seven_day_sonnet": "7d_sonnet", "seven_day_opus": "7d_opus"}


def _timestamp(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def parse_windows(raw: Any, *, percent: bool = False) -> dict[str, Window]:
    """Quota windows from a message_limit event (`utilization` 0..1) or from /usage (`percent`:
    0..100, names in words). Unknown or malformed entries are skipped, never fatal."""
    windows: dict[str, Window] = {}
    for name, entry in raw.items() if isinstance(raw, dict) else ():
        if not isinstance(entry, dict):
            continue
        used = entry.get("utilization")
        if not isinstance(used, (int, float)) or isinstance(used, bool):
            continue
        fraction = float(used) / 100 if percent else float(used)
        status = entry.get("status")
        windows[_WINDOW_NAMES.get(str(name), str(name))[:32]] = Window(
            utilization=min(max(fraction, 0.0), 1.0),
            resets_at=_timestamp(entry.get("resets_at")),
            status=str(status)
            if isinstance(status, str) and status
            else ("exceeded_limit" if fraction >= 1.0 else "within_limit"),
        )
    return windows


def usage_windows(status: int, headers: dict[str, str], body: bytes) -> dict[str, Window]:
    """The windows of a /usage answer, or the classified failure."""
    try:
        doc = loads(body) if status == 200 else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise classify(status if status >= 300 else 502, headers, body)
    return parse_windows(doc, percent=True)


def choose_org(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The chat-capable organization with the most capabilities (its record as claude.ai gives it),
    or a classified failure."""
    try:
        orgs = loads(body) if status == 200 else None
    except ValueError:
        orgs = None
    if not isinstance(orgs, list):
        # An error object instead of a list means the cookie was refused, whatever the status said.
        raise classify(status if status >= 300 else 403, headers, body)
    chat = [o for o in orgs if isinstance(o, dict) and "chat" in (o.get("capabilities") or []) and o.get("uuid")]
    if not chat:
        raise UpstreamFailure(Failure.DISABLED, "account has no organization that can chat")
    best = max(chat, key=lambda o: len(o.get("capabilities") or []))
    banned = org_flag_failure(best.get("active_flags"))
    if banned:
        raise banned
    return best


def plan_of(org: dict[str, Any]) -> str:
    """The account's plan as its organization's capabilities say (claude_max, claude_pro, ...)."""
    paid = sorted(str(c).removeprefix("claude_") for c in org.get("capabilities") or [] if str(c).startswith("claude_"))
    return ", ".join(paid) or "free"


def conversation_body(conv: str, model: str | None, temporary: bool = False) -> dict[str, Any]:
    """A new chat; a temporary one stays out of the account's history (relay still deletes it)."""
    body: dict[str, Any] = {"uuid": conv, "name": "", "include_conversation_preferences": True, "is_temporary": temporary}
    if model:
        body["model"] = model
    return body


def conversation_params(conv: str, model: str | None, thinking: bool, temporary: bool = False) -> dict[str, Any]:
    """`create_conversation_params`: the newer web app creates the chat with its first completion."""
    params = conversation_body(conv, model, temporary)
    if thinking:
        params["paprika_mode"] = "extended"
    return params


def thinking_settings_body() -> dict[str, Any]:
    """Extended thinking for one conversation; account-wide settings are never touched."""
    return {"settings": {"paprika_mode": "extended"}}


@dataclass(slots=True)
class TextAttachment:
    """Text sent inline with the completion (long history, text files); needs no upload."""

    file_name: str
    content: str

    def wire(self) -> dict[str, Any]:
        return {
            "extracted_content": self.content,
            "file_name": self.file_name,
            "file_type": "text/plain",
            "file_size": len(self.content.encode()),
        }


def completion_body(
    prompt: str,
    *,
    model: str | None,
    attachments: list[TextAttachment],
    files: list[str],
    artifacts: bool,
    web_search: bool = False,
    effort: str | None = None,
    thinking: bool = False,
    create: dict[str, Any] | None = None,
    parent: str | None = None,
    turn: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The completion request of one turn: the first of a chat (created on the way with `create`),
    or a child of the assistant message `parent`. `turn` names the turn's (human, assistant)
    messages, as the current web app does; new ids when not given."""
    human, assistant = turn or (str(uuid.uuid4()), str(uuid.uuid4()))
    body: dict[str, Any] = {
        "prompt": prompt,
        "parent_message_uuid": parent or ROOT_PARENT_UUID,
        "timezone": "UTC",
        "locale": "en-US",
        "attachments": [a.wire() for a in attachments],
        "files": files,
        "sync_sources": [],
        "rendering_mode": "messages",
        # The current web app names the turn's two messages itself.
        "turn_message_uuids": {"human_message_uuid": human, "assistant_message_uuid": assistant},
        # claude.ai's own tools for this conversation only; web search only when the client asked.
        "tools": [
            *([{"type": "artifacts_v0", "name": "artifacts"}] if artifacts else []),
            *([{"type": "web_search_v0", "name": "web_search"}] if web_search else []),
        ],
    }
    if model:
        body["model"] = model
    if effort:
        # How hard to think, as the current web app asks; sent only when the client chose an effort.
        body["effort"] = effort
        body["thinking_mode"] = "extended" if thinking else "off"
    if create:
        body["create_conversation_params"] = create
    return body


def uploaded_file_id(body: bytes) -> str:
    """The id an upload answer gives the file, to be listed in the completion's `files`."""
    try:
        doc = loads(body)
    except ValueError:
        doc = None
    file_id = (doc.get("file_uuid") or doc.get("uuid")) if isinstance(doc, dict) else None
    if not file_id:
        raise UpstreamFailure(Failure.TRANSIENT, "claude.ai accepted an upload but returned no file id")
    return str(file_id)
