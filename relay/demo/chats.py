"""The fake's chats as claude.ai keeps them: a tree of messages. A completion names the assistant
message it follows (`parent_message_uuid`, the root for a chat's first turn) and, like the current
web app, the ids of its two new messages (`turn_message_uuids`); a second child of one parent is a
branch. The model sees the whole conversation on the way to the new message."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

ROOT = "00000000-0000-4000-8000-000000000000"


@dataclass(slots=True)
class Message:
    uuid: str
    parent: str
    sender: str  # human or assistant
    text: str


@dataclass(slots=True)
class Turn:
    """A human message taken in, and the assistant message its answer will be."""

    messages: dict[str, Message]
    human: Message
    assistant: str
    conversation: str  # what the model reads: every message on the way, then the new one

    def answer(self, text: str) -> None:
        self.messages[self.human.uuid] = self.human
        self.messages[self.assistant] = Message(self.assistant, self.human.uuid, "assistant", text)


def take_turn(messages: dict[str, Message], body: dict[str, Any], max_chars: int) -> Turn | web.Response:
    """The completion's place in the chat, or claude.ai's refusal (an unknown parent, a chat too long)."""
    parent = str(body.get("parent_message_uuid") or ROOT)
    if parent != ROOT and (parent not in messages or messages[parent].sender != "assistant"):
        return _refused(404, "not_found_error", "Parent message not found in this conversation")
    given = body.get("turn_message_uuids")
    ids: dict[str, Any] = given if isinstance(given, dict) else {}
    prompt = str(body.get("prompt", ""))
    human = Message(str(ids.get("human_message_uuid") or uuid.uuid4()), parent, "human", prompt)
    # Text files and the long history go along as attachments; the model reads them first.
    files = [str(a.get("extracted_content", "")) for a in body.get("attachments") or [] if isinstance(a, dict)]
    conversation = "\n\n".join([*_path(messages, parent), *files, prompt])
    if parent != ROOT and len(conversation) > max_chars:
        return _refused(400, "invalid_request_error", "This conversation is too long to continue")
    return Turn(messages, human, str(ids.get("assistant_message_uuid") or uuid.uuid4()), conversation)


def _path(messages: dict[str, Message], parent: str) -> list[str]:
    """The conversation up to `parent`, as relay flattens one: answers after `Assistant: `."""
    texts: list[str] = []
    while parent != ROOT and parent in messages:
        message = messages[parent]
        texts.append(message.text if message.sender == "human" else f"Assistant: {message.text}")
        parent = message.parent
    return texts[::-1]


def _refused(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}
    return web.json_response(body, status=status)
