"""Flatten a conversation into one claude.ai prompt, its text attachments and its files."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..conversation import FilePart, ImagePart, Part, TextPart, ToolPlan, Turn
from ..errors import InvalidRequest
from .tools import instructions, render_call
from .webapi import TextAttachment

# claude.ai rejects images above about 10 MB; say so before uploading.
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_DOCUMENT_BYTES = 30 * 1024 * 1024
# Images and documents one request may carry (Anthropic's API takes 100 images a request); each
# is an upload to claude.ai, and a body of tiny images would otherwise be thousands of them.
MAX_FILES = 100

PREFIX = {"system": "System", "user": "Human", "assistant": "Assistant", "tool": "Human"}
NO_ARTIFACTS_NOTE = (
    "Do not create artifacts or use the artifacts tool. Put code, documents and diagrams directly in "
    "the reply as markdown code blocks."
)
HISTORY_FILE = "conversation_history.txt"
HISTORY_NOTE = (
    f"The conversation so far is in the attached file {HISTORY_FILE}. Read all of it, then reply to the "
    "last message below as the Assistant, continuing that conversation."
)

_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"GIF87a", "image/gif", "gif"),
    (b"GIF89a", "image/gif", "gif"),
)
_TEXT_SUFFIXES = re.compile(
    r"\.(txt|md|markdown|csv|tsv|json|jsonl|xml|ya?ml|toml|ini|log|html?|css|js|ts|tsx|jsx|py|rb|go|rs|java|kt|c|h|"
    r"cc|cpp|hpp|cs|php|sh|sql|swift|scala|lua|r|pl)$",
    re.IGNORECASE,
)


@dataclass(slots=True)
class Upload:
    """Bytes to upload to the account that runs the completion."""

    filename: str
    content_type: str
    data: bytes


@dataclass(slots=True)
class RemoteImage:
    """An http(s) image the relay fetches before the completion."""

    url: str
    where: str
    index: int


@dataclass(slots=True)
class Prompt:
    text: str
    attachments: list[TextAttachment] = field(default_factory=list)
    files: list[Upload | RemoteImage] = field(default_factory=list)


def sniff_image(data: bytes) -> tuple[str, str] | None:
    """(content type, extension) of a png, jpeg, gif or webp, judged by its bytes."""
    for magic, ctype, ext in _IMAGE_MAGIC:
        if data.startswith(magic):
            return ctype, ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return None


def image_upload(data: bytes, where: str, index: int) -> Upload:
    """Check image bytes and name them; a wrong type or size is the caller's error."""
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequest(f"{where}: image is {len(data)} bytes, the limit is {MAX_IMAGE_BYTES}", param=where)
    kind = sniff_image(data)
    if kind is None:
        raise InvalidRequest(f"{where}: not a png, jpeg, gif or webp image", param=where)
    return Upload(f"image_{index}.{kind[1]}", kind[0], data)


class _Builder:
    def __init__(self) -> None:
        self.attachments: list[TextAttachment] = []
        self.files: list[Upload | RemoteImage] = []

    def turn(self, turn: Turn) -> tuple[str, str]:
        """(role prefix, text) of one turn."""
        body = "\n".join(s for s in (self._part(p) for p in turn.parts) if s)
        if turn.calls:
            calls = "\n".join(render_call(c.name, c.arguments) for c in turn.calls)
            body = f"{body}\n{calls}".strip()
        if turn.role == "tool":
            who = ", ".join(x for x in (turn.name, turn.call_id) if x)
            body = f"[tool result{f' ({who})' if who else ''}]\n{'[error] ' if turn.is_error else ''}{body}"
        return PREFIX[turn.role], body

    def _part(self, part: Part) -> str:
        if isinstance(part, TextPart):
            return part.text
        if isinstance(part, ImagePart):
            return self._image(part)
        return self._file(part)

    def _add(self, file: Upload | RemoteImage, where: str) -> None:
        if len(self.files) >= MAX_FILES:
            raise InvalidRequest(f"{where}: at most {MAX_FILES} images and documents in one request", param=where)
        self.files.append(file)

    def _image(self, part: ImagePart) -> str:
        n = len(self.files) + 1
        if part.data is not None:
            self._add(image_upload(part.data, part.where, n), part.where)
        else:
            self._add(RemoteImage(part.url or "", part.where, n), part.where)
        return f"[image {n}]"

    def _file(self, part: FilePart) -> str:
        where, name, media, data = part.where, part.name, part.media_type, part.data
        if media == "application/pdf" or data.startswith(b"%PDF-"):
            if len(data) > MAX_DOCUMENT_BYTES:
                raise InvalidRequest(f"{where}: document is larger than {MAX_DOCUMENT_BYTES} bytes", param=where)
            filename = name if name.lower().endswith(".pdf") else name + ".pdf"
            self._add(Upload(filename, "application/pdf", data), where)
            return f"[document {filename}]"
        if media.startswith("text/") or media in ("application/json", "application/xml") or _TEXT_SUFFIXES.search(name):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(f"{where}: text file is not UTF-8", param=where) from None
            self.attachments.append(TextAttachment(name, text))
            return f"[file {name}]"
        raise InvalidRequest(f"{where}: unsupported file type {media}; send PDF, text or an image", param=where)


def build_prompt(
    turns: list[Turn],
    *,
    no_role_prefix: bool,
    disable_artifacts: bool,
    max_history: int,
    tools: ToolPlan | None = None,
) -> Prompt:
    """The whole conversation as one prompt; past `max_history` characters the history becomes a file."""
    builder = _Builder()
    parts = [builder.turn(t) for t in turns]
    lines = [body if no_role_prefix else f"{role}: {body}" for role, body in parts]
    notes = [NO_ARTIFACTS_NOTE] if disable_artifacts else []
    if tools is not None and tools.active:
        notes.append(instructions(tools))
    text = "\n\n".join(lines)
    # The message to answer: the last user turn and any notes that follow it.
    last = max((i for i, (role, _) in enumerate(parts) if role == "Human"), default=len(parts) - 1)
    if len(text) > max_history and last > 0:
        builder.attachments.insert(0, TextAttachment(HISTORY_FILE, "\n\n".join(lines[:last])))
        text = "\n\n".join(lines[last:])
        notes.append(HISTORY_NOTE)
    if notes:
        note = " ".join(notes)
        text = f"{note}\n\n{text}" if no_role_prefix else f"System: {note}\n\n{text}"
    return Prompt(text, builder.attachments, builder.files)
