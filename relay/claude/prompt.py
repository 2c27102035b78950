"""Flatten an OpenAI conversation into one claude.ai prompt, its text attachments and its files."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from ..errors import InvalidRequest
from ..chat_api.models import AudioPart, FilePart, ImagePart, Message, TextPart
from .tools import ToolPlan, instructions, render_call
from .webapi import TextAttachment

# claude.ai rejects images above about 10 MB; say so before uploading.
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_DOCUMENT_BYTES = 30 * 1024 * 1024

PREFIX = {
    "system": "System",
    "developer": "System",
    "user": "Human",
    "assistant": "Assistant",
}
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
    re.I,
)
_DATA_URL = re.compile(r"^data:([\w.+\-]+/[\w.+\-]+)?((?:;[\w\-]+=[^;,]*)*)(;base64)?,(.*)$", re.S)


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


def decode_data_url(url: str, where: str) -> tuple[str, bytes]:
    """(media type, bytes) of a `data:` URL; bad base64 is a 400 naming the part."""
    match = _DATA_URL.match(url)
    if not match:
        raise InvalidRequest(f"{where}: malformed data: URL", param=where)
    media, _, is_b64, payload = match.groups()
    if not is_b64:
        return media or "text/plain", payload.encode()
    try:
        return media or "application/octet-stream", base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}: base64 data does not decode", param=where) from None


class _Builder:
    def __init__(self) -> None:
        self.attachments: list[TextAttachment] = []
        self.files: list[Upload | RemoteImage] = []

    def message(self, i: int, msg: Message) -> tuple[str, str]:
        """(role prefix, text) of one message."""
        body = self._content(i, msg)
        if msg.role == "assistant" and msg.tool_calls:
            calls = "\n".join(render_call(c.function.name, c.function.arguments) for c in msg.tool_calls)
            body = f"{body}\n{calls}".strip()
        if msg.role in ("tool", "function"):
            who = ", ".join(x for x in (msg.name, msg.tool_call_id) if x)
            body = f"[tool result{f' ({who})' if who else ''}]\n{body}"
            role = "Human"
        else:
            role = PREFIX[msg.role]
        return role, body

    def _content(self, i: int, msg: Message) -> str:
        if msg.content is None:
            return ""
        if isinstance(msg.content, str):
            return msg.content
        out: list[str] = []
        for j, part in enumerate(msg.content):
            where = f"messages.{i}.content.{j}"
            if isinstance(part, TextPart):
                out.append(part.text)
            elif isinstance(part, ImagePart):
                out.append(self._image(part.image_url.url, f"{where}.image_url"))
            elif isinstance(part, FilePart):
                out.append(self._file(part, f"{where}.file"))
            elif isinstance(part, AudioPart):
                raise InvalidRequest(f"{where}: input_audio parts are not supported", param=where)
        return "\n".join(s for s in out if s)

    def _image(self, url: str, where: str) -> str:
        n = len(self.files) + 1
        if url.startswith("data:"):
            _, data = decode_data_url(url, where)
            self.files.append(image_upload(data, where, n))
        elif url.startswith(("http://", "https://")):
            self.files.append(RemoteImage(url, where, n))
        else:
            raise InvalidRequest(f"{where}: url must be a data: URL or an http(s) URL", param=where)
        return f"[image {n}]"

    def _file(self, part: FilePart, where: str) -> str:
        spec = part.file
        if not spec.file_data:
            raise InvalidRequest(f"{where}: only inline file_data is supported, not file_id", param=where)
        media, data = decode_data_url(spec.file_data, f"{where}.file_data")
        name = spec.filename or "document"
        if media == "application/pdf" or data.startswith(b"%PDF-"):
            if len(data) > MAX_DOCUMENT_BYTES:
                raise InvalidRequest(f"{where}: document is larger than {MAX_DOCUMENT_BYTES} bytes", param=where)
            filename = name if name.lower().endswith(".pdf") else name + ".pdf"
            self.files.append(Upload(filename, "application/pdf", data))
            return f"[document {filename}]"
        if media.startswith("image/"):
            return self._image(spec.file_data, f"{where}.file_data")
        if media.startswith("text/") or media in ("application/json", "application/xml") or _TEXT_SUFFIXES.search(name):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(f"{where}: text file is not UTF-8", param=where) from None
            self.attachments.append(TextAttachment(name, text))
            return f"[file {name}]"
        raise InvalidRequest(f"{where}: unsupported file type {media}; send PDF, text or an image", param=where)


def build_prompt(
    messages: list[Message],
    *,
    no_role_prefix: bool,
    disable_artifacts: bool,
    max_history: int,
    tools: ToolPlan | None = None,
) -> Prompt:
    """The whole conversation as one prompt; past `max_history` characters the history becomes a file."""
    builder = _Builder()
    parts = [builder.message(i, m) for i, m in enumerate(messages)]
    if not any(body.strip() for _, body in parts) and not builder.files and not builder.attachments:
        raise InvalidRequest("messages: every message is empty", param="messages")
    turns = [body if no_role_prefix else f"{role}: {body}" for role, body in parts]
    notes = [NO_ARTIFACTS_NOTE] if disable_artifacts else []
    if tools is not None and tools.active:
        notes.append(instructions(tools))
    text = "\n\n".join(turns)
    # The message to answer: the last user turn and any notes that follow it.
    last = max((i for i, (role, _) in enumerate(parts) if role == "Human"), default=len(parts) - 1)
    if len(text) > max_history and last > 0:
        builder.attachments.insert(0, TextAttachment(HISTORY_FILE, "\n\n".join(turns[:last])))
        text = "\n\n".join(turns[last:])
        notes.append(HISTORY_NOTE)
    if notes:
        note = " ".join(notes)
        text = f"{note}\n\n{text}" if no_role_prefix else f"System: {note}\n\n{text}"
    return Prompt(text, builder.attachments, builder.files)
