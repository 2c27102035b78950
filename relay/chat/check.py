"""`relay check`: every configured account asked about by claude.ai, one verdict per account."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from ..claude import webapi
from ..claude.client import AccountApi, upstream_client
from ..claude.failures import UpstreamFailure
from ..config import SessionSpec, Settings
from ..pool.account import mask_key
from ..reply import Text

CONCURRENT_CHECKS = 8  # a few at once: quick with many accounts, gentle on claude.ai
PROBE_PROMPT = "Reply with the single word: ok"


@dataclass
class Verdict:
    key: str  # masked
    serves: bool = False
    verdict: str = ""
    org: str = ""
    plan: str = ""
    quota: str = ""
    notes: list[str] = field(default_factory=list)


async def check_accounts(settings: Settings, *, complete: bool) -> list[Verdict]:
    client = upstream_client(settings)
    gate = asyncio.Semaphore(CONCURRENT_CHECKS)

    async def one(spec: SessionSpec) -> Verdict:
        async with gate:
            proxy = spec.proxy.get_secret_value() if spec.proxy else None
            return await _check(client.for_key(spec.key.get_secret_value(), proxy=proxy), spec, complete)

    try:
        return list(await asyncio.gather(*(one(s) for s in settings.sessions)))
    finally:
        await client.close()


async def _check(api: AccountApi, spec: SessionSpec, complete: bool) -> Verdict:
    found = Verdict(mask_key(spec.key.get_secret_value()))
    try:
        org = await api.organization()
    except UpstreamFailure as failure:
        found.verdict = f"refused: {failure.kind.value} ({failure.message})"
        return found
    found.org, found.plan = str(org["uuid"]), webapi.plan_of(org)
    if spec.org_id and spec.org_id != found.org:
        found.notes.append(f"SESSIONS names org {spec.org_id}, claude.ai chats through {found.org}")
    exhausted = False
    try:
        windows = await api.usage(found.org)
        found.quota = ", ".join(f"{name} {w.utilization:.0%}" for name, w in sorted(windows.items())) or "not reported"
        exhausted = any(w.exhausted(time.time()) for w in windows.values())
    except UpstreamFailure as failure:
        found.quota = f"unknown ({failure.message})"
    if complete:
        try:
            found.notes.append(f"answered {await _complete(api, found.org)!r}")
        except UpstreamFailure as failure:
            found.verdict = f"cannot complete: {failure.kind.value} ({failure.message})"
            return found
    found.serves = not exhausted
    found.verdict = "limited until its window resets" if exhausted else "ok"
    return found


async def _complete(api: AccountApi, org: str) -> str:
    """A one-word answer in a chat of its own, deleted afterwards."""
    conv = str(uuid.uuid4())
    create = webapi.conversation_params(conv, None, False, True)
    body = webapi.completion_body(PROBE_PROMPT, model=None, attachments=[], files=[], artifacts=False, create=create)
    text: list[str] = []
    try:
        async with api.completion(org, conv, body) as batches:
            async for batch in batches:
                text += [e.text for e in batch if isinstance(e, Text)]
    finally:
        try:
            await api.delete_conversation(org, conv)
        except UpstreamFailure:
            pass  # a chat left behind is a small cost; the verdict is what was asked for
    return "".join(text).strip()[:40]


async def run_check(settings: Settings, *, complete: bool) -> int:
    """Print the verdicts; the exit status is 1 when no account can serve."""
    verdicts = await check_accounts(settings, complete=complete)
    print(table(verdicts))
    return 0 if any(v.serves for v in verdicts) else 1


def table(verdicts: list[Verdict]) -> str:
    head = ("account", "verdict", "organization", "plan", "quota")
    rows = [head] + [(v.key, v.verdict, v.org or "-", v.plan or "-", v.quota or "-") for v in verdicts]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for v in verdicts:
        lines += [f"{v.key}: {note}" for note in v.notes]
    serving = sum(v.serves for v in verdicts)
    lines.append(f"{serving} of {len(verdicts)} account(s) can serve")
    return "\n".join(lines)
