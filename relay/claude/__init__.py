"""Everything about claude.ai: paths and bodies, the curl_cffi client, the stream's events,
failure classification, the prompt, uploads and tool-call parsing.

May import the shared modules at the top of `relay`; not pool/, server/ or a client API.
"""
