"""Sealing what the state stores keep at rest (STATE_FILE, Redis): AES-GCM under a key derived
from STATE_SECRET. A sealed value carries a random nonce and fails to open if anyone changed it.

What stays readable to whoever reads the file or Redis: account ids (hashes of the cookies),
states, cooldowns, org ids, quota use, client-key names, limits and (keyed) hashes; never a
cookie, a proxy password or a conversation while STATE_SECRET is set.
"""

from __future__ import annotations

import base64
import hashlib
import os

PREFIX = "sealed:v1:"
# Separates this key from the HMAC key of client-key hashes, derived from the same secret.
CONTEXT = b"relay state at rest v1"


class SealError(ValueError):
    """A sealed value that does not open: another STATE_SECRET, or tampered with."""


class Sealer:
    """Seals and opens values with one secret."""

    def __init__(self, secret: str) -> None:
        # Imported here: only a relay with STATE_SECRET pays the memory cryptography takes (6 MB).
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = hashlib.sha256(CONTEXT + secret.encode()).digest()
        self._aead = AESGCM(key)

    def seal(self, data: bytes) -> str:
        nonce = os.urandom(12)
        return PREFIX + base64.b64encode(nonce + self._aead.encrypt(nonce, data, CONTEXT)).decode()

    def open(self, text: str) -> bytes:
        if not text.startswith(PREFIX):
            raise SealError("not a sealed value")
        from cryptography.exceptions import InvalidTag

        raw = base64.b64decode(text[len(PREFIX) :])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], CONTEXT)
        except (InvalidTag, ValueError):
            raise SealError("a sealed value does not open with this STATE_SECRET") from None


def is_sealed(text: str) -> bool:
    return text.startswith(PREFIX)
