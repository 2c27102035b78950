"""The OpenAI Responses API as a client API (Codex CLI speaks only this): request models, the
adapter, the event renderer.

May import the shared modules at the top of `relay` (conversation, render, errors, sse); not
claude/, pool/ or server/.
"""
