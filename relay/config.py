"""Settings from the environment and `.env`, validated once at start-up."""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# claude.ai cookies look like sk-ant-sid01-<body>; sid02 is the newer generation.
SESSION_KEY_RE = re.compile(r"^sk-ant-sid0[12]-[A-Za-z0-9_\-]{8,}$")

# Current claude.ai models (the ids Claude Code 2.1.332 knows; Sonnet 4.5 retired on 2026-11-30);
# each also gets a `-think` twin that turns extended thinking on.
DEFAULT_MODELS = (
    "claude-sonnet-5-5",
    "claude-opus-5-5",
    "claude-haiku-5-5",
    "claude-opus-4-8",
    "claude-opus-4-7",
    "claude-sonnet-4-6",
    "claude-opus-4-6",
    "claude-haiku-4-5",
)
THINK_SUFFIX = "-think"


class SessionSpec(BaseModel):
    """One account: its sessionKey cookie and, optionally, a known organization id and a proxy of
    its own (so that accounts do not all leave from one address). Validated however it is made:
    from a SESSIONS entry, an admin request's fields or a stored record."""

    model_config = ConfigDict(frozen=True)

    key: SecretStr
    org_id: str | None = None
    proxy: SecretStr | None = None  # may hold a password

    @field_validator("key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        if not SESSION_KEY_RE.match(value.get_secret_value()):
            raise ValueError("each entry must be sk-ant-sid01-... or sk-ant-sid02-..., optionally :orgId and @proxy")
        return value

    @field_validator("org_id")
    @classmethod
    def _org(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9A-Za-z\-]{4,64}", value):
            raise ValueError("the organization id after ':' must be a uuid")
        return value or None

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not PROXY_URL.match(value.get_secret_value()):
            raise ValueError("the proxy after '@' must be a URL such as socks5://host:1080 or http://host:8080")
        return value

    @classmethod
    def parse(cls, raw: str) -> SessionSpec:
        """Parse `key`, `key:orgid`, and either with `@proxy-url`; raises ValueError on anything else."""
        head, at, proxy = raw.strip().partition("@")
        key, _, org = head.partition(":")
        try:
            return cls.model_validate({"key": key, "org_id": org or None, "proxy": proxy if at else None})
        except ValidationError as exc:
            raise ValueError(first_problem(exc)[1]) from None

    def record(self) -> dict[str, str | None]:
        """As the state store keeps an added account (the cookie itself: it must survive restarts);
        `SessionSpec.model_validate` reads it back."""
        return {
            "key": self.key.get_secret_value(),
            "org_id": self.org_id,
            "proxy": self.proxy.get_secret_value() if self.proxy else None,
        }


def first_problem(exc: ValidationError) -> tuple[str, str]:
    """(field, plain message) of a validation error's first problem."""
    err = exc.errors()[0]
    return ".".join(str(p) for p in err["loc"]), str(err["msg"]).removeprefix("Value error, ")


PROXY_URL = re.compile(r"^(https?|socks4a?|socks5h?)://[^\s/]+(:\d+)?/?$")


def shown_proxy(url: str) -> str:
    """A proxy URL without its credentials, for views and logs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else "***"


def http_url(value: str, example: str) -> str:
    """An http(s) URL without its trailing slash, or a ValueError naming an example."""
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"must be an http(s) URL such as {example}")
    return value.rstrip("/")


class Fallback(BaseModel):
    """Another provider that answers when no claude.ai account can (FALLBACK_API_*_n)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=64)
    url: str
    key: SecretStr = SecretStr("")
    model: str | None = None
    type: Literal["openai", "anthropic"] = "openai"

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        return http_url(value, "https://api.openai.com/v1")


_FALLBACK_VAR = re.compile(r"FALLBACK_API_(NAME|URL|KEY|MODEL|TYPE)_(\d+)")


def numbered_fallbacks(sources: list[dict[str, str | None]]) -> tuple[list[int], list[dict[str, str]]]:
    """FALLBACK_API_{NAME,URL,KEY,MODEL,TYPE}_n grouped by n, in order (later sources win)."""
    groups: dict[int, dict[str, str]] = {}
    for source in sources:
        for var, value in source.items():
            match = _FALLBACK_VAR.fullmatch(var.upper())
            if match and value:
                groups.setdefault(int(match[2]), {})[match[1].lower()] = value
    numbers = sorted(groups)
    return numbers, [{"name": f"fallback-{n}", **groups[n]} for n in numbers]


def parse_sessions(raw: object) -> tuple[SessionSpec, ...]:
    """Split a comma list of sessions, skipping blanks."""
    if isinstance(raw, (tuple, list)):
        return tuple(s if isinstance(s, SessionSpec) else SessionSpec.parse(str(s)) for s in raw)
    return tuple(SessionSpec.parse(p) for p in str(raw or "").split(",") if p.strip())


class Settings(BaseSettings):
    """Every setting relay reads; names match claude2api's so its users rename nothing."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False, env_ignore_empty=True)

    sessions: Annotated[tuple[SessionSpec, ...], NoDecode] = ()
    address: str = "0.0.0.0:8080"
    port: int | None = Field(default=None, ge=1, le=65535)
    apikey: SecretStr = SecretStr("")
    admin_key: SecretStr = SecretStr("")
    client_keys: str | None = None
    proxy: str | None = None
    chat_delete: bool = True
    max_chat_history_length: int = Field(default=10000, ge=0)
    no_role_prefix: bool = False
    prompt_disable_artifacts: bool = False
    enable_mirror_api: bool = False
    mirror_api_prefix: str = ""
    claude_base_url: str = "https://claude.ai"
    log_format: Literal["text", "json"] = "text"
    metrics_public: bool = False
    log_level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    models: Annotated[tuple[str, ...], NoDecode] = DEFAULT_MODELS
    # Client model names served as claude.ai models: `gpt-5.5=claude-opus-5-5,...` (Codex CLI
    # unlocks its full tool set, apply_patch included, only for names it knows).
    model_aliases: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    max_retries: int | None = Field(default=None, ge=1, le=20)
    image_fetch_private: bool = False
    max_body_size: int = Field(default=32 * 1024 * 1024, ge=1024)
    heartbeat_interval: float = Field(default=15.0, gt=0)
    connect_timeout: float = Field(default=15.0, gt=0)
    read_timeout: float = Field(default=300.0, gt=0)
    shutdown_grace: float = Field(default=10.0, ge=0)
    request_header_timeout: float = Field(default=15.0, gt=0)
    request_body_timeout: float = Field(default=60.0, gt=0)
    thinking_format: Literal["think_tags", "reasoning_content"] = "think_tags"
    show_tool_activity: Literal["compact", "none"] = "compact"
    temporary_chats: bool = False
    state_url: str | None = None
    state_file: str | None = None
    state_prefix: str = Field(default="relay", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    # Encrypts what STATE_FILE and Redis keep of secrets and conversations, and keys client-key hashes.
    state_secret: SecretStr = SecretStr("")
    # Lets added accounts' cookies be kept unencrypted when STATE_SECRET is not set.
    state_plaintext: bool = False
    state_lease_seconds: float = Field(default=30.0, gt=0)
    response_ttl: float = Field(default=3600.0, gt=0)
    # sessions: a client's conversation continues one claude.ai chat; fresh: one chat per request.
    conversations: Literal["sessions", "fresh"] = "sessions"
    session_ttl: float = Field(default=3600.0, gt=0)
    usage_refresh: float = Field(default=300.0, ge=10)
    # Days of hourly usage history kept (per key, account and model).
    usage_history_days: int = Field(default=90, ge=1, le=400)
    # Seconds an account may stay refused (invalid, disabled) before it is declared dead; 0: never.
    dead_account_ttl: float = Field(default=86400.0, ge=0)
    fallback_mode: Literal["when_pool_unavailable", "off"] = "when_pool_unavailable"
    # Filled from the numbered FALLBACK_API_*_n variables by load_settings.
    fallbacks: Annotated[tuple[Fallback, ...], NoDecode] = ()
    upstream_max_connections: int = Field(default=64, ge=1, le=1024)
    # Seconds: upstream reads are handled at most this often while answers stream fast (0: at every read).
    upstream_read_interval: float = Field(default=0.001, ge=0, le=0.1)
    # auto: uvloop when it is installed (pip install 'relay[speed]'; the image has it), else asyncio's.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"

    @field_validator("sessions", mode="before")
    @classmethod
    def _split_sessions(cls, value: object) -> tuple[SessionSpec, ...]:
        return parse_sessions(value)

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> tuple[str, ...]:
        items = value if isinstance(value, (tuple, list)) else str(value).split(",")
        names = [str(m).strip() for m in items if str(m).strip()]
        if not names:
            raise ValueError("needs at least one model name")
        return tuple(names)

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _split_aliases(cls, value: object) -> dict[str, str]:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        aliases: dict[str, str] = {}
        for entry in (e.strip() for e in str(value or "").split(",")):
            alias, sep, target = entry.partition("=")
            if not entry:
                continue
            if not sep or not alias.strip() or not re.fullmatch(r"claude-[a-z0-9][a-z0-9.\-]*", target.strip()):
                raise ValueError(f"{entry[:60]!r}: each entry is client-name=claude-model, e.g. gpt-5.5=claude-opus-5-5")
            aliases[alias.strip()] = target.strip()
        return aliases

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("proxy", "state_url", "state_file", "client_keys", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("state_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (or empty)")
        return value

    @field_validator("state_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("claude_base_url")
    @classmethod
    def _origin(cls, value: str) -> str:
        return http_url(value, "https://claude.ai")

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 0.0.0.0:8080")
        return value

    @field_validator("mirror_api_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith("/"):
            value = "/" + value
        return value.rstrip("/")

    @model_validator(mode="after")
    def _mirror_needs_prefix(self) -> Settings:
        # An empty prefix would put mirror routes on /v1 and let any cookie bypass APIKEY.
        if self.enable_mirror_api and not self.mirror_api_prefix:
            raise ValueError("MIRROR_API_PREFIX must be a non-empty path such as /mirror when ENABLE_MIRROR_API=true")
        return self

    @property
    def host(self) -> str:
        """The host part of ADDRESS; an IPv6 address may be written in brackets (`[::]:8080`)."""
        return self.address.rpartition(":")[0].removeprefix("[").removesuffix("]") or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        """PORT (set by Hugging Face Spaces) wins over the port part of ADDRESS."""
        return self.port or int(self.address.rpartition(":")[2])

    @cached_property
    def served_models(self) -> tuple[str, ...]:
        """Configured models followed by their `-think` twins, then the aliases (computed once;
        settings are frozen)."""
        base = [m for m in self.models if not m.endswith(THINK_SUFFIX)]
        return (*base, *(m + THINK_SUFFIX for m in base), *(a for a in self.model_aliases if a not in base))


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read env then `.env` (env wins), apply overrides, and explain the first problem plainly."""
    path = Path(env_file) if env_file else None
    file = path if path and path.is_file() else None
    numbers, fallbacks = numbered_fallbacks([dotenv_values(file) if file else {}, dict(os.environ)])
    if fallbacks and "fallbacks" not in overrides:
        overrides["fallbacks"] = fallbacks
    try:
        return Settings(_env_file=file, **overrides)  # type: ignore[call-arg]  # pydantic-settings reads it
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        name = str(loc[0]).upper() if loc else "configuration"
        if loc and loc[0] == "fallbacks" and len(loc) > 2 and isinstance(loc[1], int) and loc[1] < len(numbers):
            name = f"FALLBACK_API_{str(loc[2]).upper()}_{numbers[loc[1]]}"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{name}: {msg}") from None
