"""What to ask claude.ai for one request, independent of the client API that asked."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..claude.prompt import Prompt, build_prompt
from ..config import THINK_SUFFIX, Settings
from ..conversation import Chat, Effort, OutputFormat, ToolPlan, Turn, name_tool_results
from ..errors import ModelNotFound
from ..reply import estimate_tokens
from .structured import check_schema
from .transcript import chain

CLAUDE_MODEL = re.compile(r"^claude-[a-z0-9][a-z0-9.\-]*$")


@dataclass(slots=True)
class ChatJob:
    """What to ask claude.ai: the prompt and the options of the completion."""

    model: str
    thinking: bool
    prompt: Prompt
    artifacts: bool = True
    tools: ToolPlan | None = None
    web_search: bool = False
    effort: Effort | None = None
    # Conversation sessions: the turns and the transcript digest after each (empty: no session).
    turns: list[Turn] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    scope: str = ""  # who the session belongs to: a client key, or a mirror-mode cookie
    output: OutputFormat | None = None  # a structured answer, checked before the client sees it

    @property
    def checked(self) -> bool:
        """The whole answer is checked before the client sees any of it: a structured answer, or
        a strict tool's call."""
        return self.output is not None or bool(self.tools and any(t.strict for t in self.tools.tools))

    @property
    def prompt_tokens(self) -> int:
        """Estimated input tokens: the prompt and its text attachments."""
        return estimate_tokens(len(self.prompt.text) + sum(len(a.content) for a in self.prompt.attachments))


def resolve_model(settings: Settings, name: str) -> tuple[str, bool]:
    """(upstream model, thinking on) for a model a client asked for.

    Listed models and any other `claude-*` name pass (claude.ai decides whether the account has
    it, so dated ids such as Claude Code's work); anything else is a clear 404.
    """
    if name in settings.model_aliases:
        return resolve_model(settings, settings.model_aliases[name])
    if name not in settings.served_models and not CLAUDE_MODEL.match(name):
        message = f"model {name!r} is not served here; GET /v1/models lists the models (set MODELS or MODEL_ALIASES)"
        raise ModelNotFound(message)
    if name.endswith(THINK_SUFFIX):
        return name.removesuffix(THINK_SUFFIX), True
    return name, False


def build_job(settings: Settings, chat: Chat, scope: str = "") -> ChatJob:
    """The job for a chat; every problem with the request is raised here. With sessions on, the
    job carries its transcript digests, scoped to `scope`."""
    model, think_model = resolve_model(settings, chat.model)
    name_tool_results(chat.turns)
    if chat.output is not None:
        check_schema(chat.output.schema, "schema")
    tools = chat.tools if chat.tools and chat.tools.active else None
    for tool in tools.tools if tools else []:
        if tool.strict:  # its calls are checked against its schema
            check_schema(tool.parameters, f"tools ({tool.name})")
    prompt = build_prompt(
        chat.turns,
        no_role_prefix=settings.no_role_prefix,
        disable_artifacts=settings.prompt_disable_artifacts or tools is not None,
        max_history=settings.max_chat_history_length,
        tools=tools,
    )
    thinking = chat.thinking or think_model
    sessions = settings.conversations == "sessions" and bool(scope)
    return ChatJob(
        model=model,
        thinking=thinking,
        prompt=prompt,
        artifacts=not settings.prompt_disable_artifacts and tools is None,
        tools=tools,
        web_search=chat.web_search,
        effort=chat.effort,
        turns=chat.turns if sessions else [],
        digests=chain(chat, scope, model, thinking) if sessions else [],
        scope=scope,
        output=chat.output,
    )
