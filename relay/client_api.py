"""What a client-API adapter provides: its wire request parsed into a `Chat`, a renderer for its
answers, and its error shape. Routes, the error middleware and fallbacks dispatch on it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, Field, ValidationError

from .conversation import Chat
from .errors import InvalidRequest, NotFound, RelayError
from .render import Activity, Renderer

Wire = Literal["openai", "anthropic"]

# Stop sequences a request may give: each is looked for in every streamed chunk, so thousands of
# them would hold the event loop on every chunk (OpenAI takes 4), and the longest is held back.
MAX_STOPS = 16
MAX_STOP_CHARS = 1000
StopSequence = Annotated[str, Field(max_length=MAX_STOP_CHARS)]
StopSequences = Annotated[list[StopSequence], Field(max_length=MAX_STOPS)]


@dataclass(slots=True)
class ApiRequest:
    """A parsed request: the neutral chat and the body as the client sent it."""

    chat: Chat
    body: dict[str, Any]


class Memory(Protocol):
    """Where answers are kept for a client API that continues earlier ones (the state store)."""

    async def load_answer(self, answer_id: str) -> bytes | None: ...

    async def keep_answer(self, answer_id: str, data: bytes) -> None: ...


R = TypeVar("R", bound=ApiRequest)
M = TypeVar("M", bound=BaseModel)


class ClientApi(ABC, Generic[R]):
    """One client API over the pool."""

    #: Short name for logs.
    name: str
    #: A fallback provider of this type gets the client's own body, and its answer passes back as it is.
    wire: Wire | None = None
    #: The body field that holds the conversation, for error messages.
    turns_field: str = "messages"

    def __init__(self, activity: Activity = "compact") -> None:
        self.activity = activity  # SHOW_TOOL_ACTIVITY, for the renderers

    @abstractmethod
    def parse(self, body: object) -> R:
        """Validate the wire request; every problem is an InvalidRequest naming the field."""

    @abstractmethod
    def renderer(self, request: R, prompt_tokens: int) -> Renderer: ...

    def parse_count(self, body: object) -> Chat:
        """A token-count request: the chat whose prompt would be counted (APIs with a count path)."""
        raise NotFound(f"{self.name} has no token-count route")

    def error_body(self, exc: RelayError) -> dict[str, Any]:
        """The error object in this API's shape; OpenAI's unless the API says otherwise."""
        return exc.body()

    async def recall(self, request: R, memory: Memory) -> None:
        """Bring in what the request refers to from earlier answers (nothing, for most APIs)."""

    async def remember(self, request: R, renderer: Renderer, memory: Memory) -> None:
        """Keep a finished answer for later requests; called before its last frame is sent."""


def validate(model: type[M], data: object) -> M:
    """A decoded JSON body as `model`; the first problem becomes a 400 naming the field as sent."""
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # A union reports every branch; the one that got deepest into the data says what is wrong.
        path, err = max(((_client_path(data, e["loc"]), e) for e in exc.errors()), key=lambda pe: len(pe[0]))
        loc = ".".join(str(p) for p in path)
        raise InvalidRequest(f"{loc}: {err['msg']}" if loc else err["msg"], param=loc or None) from None


def _client_path(data: object, loc: tuple[int | str, ...]) -> list[int | str]:
    """The steps of a validation error's location that exist in the client's data.

    pydantic puts union branch names (`str`, `list[...]`, tags) into locations; they are not fields
    the client sent, so only keys and indexes that lead into the data are kept.
    """
    path: list[int | str] = []
    node = data
    for step in loc:
        if (child := _child(node, step)) is not _MISSING:
            node = child
        elif isinstance(node, dict) and isinstance(step, str) and not _branch_name(step):
            path.append(step)  # a missing required field: name it, then stop
            break
        else:
            continue
        path.append(step)
    return path


_MISSING = object()


def _child(node: object, step: int | str) -> object:
    """What `step` leads to inside the client's data, or _MISSING."""
    if isinstance(node, dict):
        return node.get(step, _MISSING)
    if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
        return node[step]
    return _MISSING


def _branch_name(step: str) -> bool:
    """pydantic's names for union branches and validators, which are not field names."""
    return any(c in step for c in "[]-,") or step in ("str", "int", "float", "bool", "list", "dict", "none")
