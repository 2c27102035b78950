"""One chat on claude.ai: the job built from a client's `Chat`, the account for each attempt,
optional upstream features negotiated per account, failover before the first byte, and the
housekeeping around it (organization discovery, quota polling, chat deletion).

May import claude/, pool/ and the shared modules at the top of `relay`; knows no client API and
nothing of HTTP serving (never server/ or a client-API folder).
"""
