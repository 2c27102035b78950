"""OpenAI Chat Completions as a client API: request models, the adapter, the chunk renderer.

May import the shared modules at the top of `relay` (conversation, render, errors, sse); not
claude/, pool/ or server/.
"""
