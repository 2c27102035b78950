"""Deleting a chat after its answer: housekeeping in the background, never on the answer's path."""

from __future__ import annotations

import asyncio

from loguru import logger

from ..claude.client import AccountApi
from ..claude.failures import UpstreamFailure
from ..metrics import Metrics
from .completion import ChatRecord

# Tries 0.5, 1, 2 and 4 s apart, which also outlasts a completion still being created upstream
# after it was cut off.
DELETE_ATTEMPTS = 5
DELETE_BACKOFF = 0.5


async def delete_chat(api: AccountApi, alias: str, org: str, chat: ChatRecord, metrics: Metrics) -> None:
    """Delete the chat. A 404 is believed only once claude.ai has answered the completion: a
    completion cut off before that may still create the chat after this delete arrived."""
    for attempt in range(DELETE_ATTEMPTS):
        try:
            existed = await api.delete_conversation(org, chat.uuid)
        except UpstreamFailure as failure:
            if not failure.retryable or attempt == DELETE_ATTEMPTS - 1:
                logger.warning("could not delete chat {} on {}: {}", chat.uuid, alias, failure.message)
                metrics.chat_delete_failures.inc()
                return
        else:
            if existed:
                logger.debug("deleted chat {} on {}", chat.uuid, alias)
                metrics.chats_deleted.inc()
                return
            if chat.settled:
                return
        await asyncio.sleep(DELETE_BACKOFF * 2**attempt)
