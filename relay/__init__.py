"""relay: OpenAI- and Anthropic-compatible API over a pool of claude.ai web accounts."""

__version__ = "0.1.0"
