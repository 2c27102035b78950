"""The account pool: accounts and their states, selection, and where state lives (memory,
STATE_FILE, Redis) and the records they keep.

May import config, errors, reply (quota windows) and claude.failures (what an upstream failure
means); nothing else.
"""
