"""Optional upstream features, negotiated in one place: each completion tries the features its job
wants that the account is not known to refuse, drops each one claude.ai refuses, and records per
account (`Account.features[name]`) what worked and what was refused.

A feature is refused when the failure is one that claude.ai gives for that feature alone; any
other failure is the request's own and goes up as it is. When a failure could mean either of two
features, the inner one (earlier in FEATURES) is given up first; if the outer one is given up
later, the inner one is tried again, so a feature is only recorded as refused by an attempt that
worked without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from ..claude.failures import Failure, UpstreamFailure
from ..pool.account import Account
from .job import ChatJob


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    #: What the account does instead, for the log.
    instead: str
    wanted: Callable[[ChatJob], bool]
    #: Whether `failure` means claude.ai refused this feature (`known`: it worked on this account before).
    refused: Callable[[UpstreamFailure, bool], bool]


def _rejected(failure: UpstreamFailure) -> bool:
    return failure.kind is Failure.REJECTED


# Creating the chat from `create_conversation_params` in the first completion (one round trip).
# An upstream without it refuses the unknown chat: 404, or another 4xx while nothing is known yet.
INLINE_CREATE = Feature(
    "inline_create",
    "creating chats explicitly",
    wanted=lambda job: True,
    refused=lambda failure, known: _rejected(failure) and (not known or failure.status == 404),
)
# The `effort` / `thinking_mode` completion fields: a refusal is a 4xx other than 404 (an unknown chat).
EFFORT = Feature(
    "effort",
    "asking without the effort fields",
    wanted=lambda job: job.effort is not None,
    refused=lambda failure, known: _rejected(failure) and not known and failure.status != 404,
)
# Inner first: the order in which they are given up when a failure could be either's.
FEATURES = (EFFORT, INLINE_CREATE)


class Negotiation:
    """The features one completion on one account uses, as claude.ai lets it."""

    __slots__ = ("_account", "_on", "_wanted")

    def __init__(self, account: Account, job: ChatJob, *, continuing: bool = False) -> None:
        self._account = account
        # A continued chat exists already: nothing to create, inline or not.
        offered = [f for f in FEATURES if not (continuing and f is INLINE_CREATE)]
        self._wanted = [f for f in offered if f.wanted(job) and account.features.get(f.name) is not False]
        self._on = list(self._wanted)

    def uses(self, feature: Feature) -> bool:
        return feature in self._on

    def drop_refused(self, failure: UpstreamFailure) -> bool:
        """Give up the innermost feature this failure refuses, trying the inner ones given up
        before again; False when it refuses none of them."""
        features = self._account.features
        culprit = next((f for f in self._on if f.refused(failure, features.get(f.name) is True)), None)
        if culprit is None:
            return False
        rank = FEATURES.index(culprit)
        self._on = [f for f in self._wanted if FEATURES.index(f) < rank or (f in self._on and f is not culprit)]
        return True

    def settle(self) -> bool:
        """The completion started: what it used works on this account, what it gave up does not;
        True when that is news."""
        features, news = self._account.features, False
        for feature in self._wanted:
            works = feature in self._on
            if features.get(feature.name) is not works:
                news = True
                if not works:
                    logger.info("{} does not take {}; {}", self._account.alias, feature.name, feature.instead)
            features[feature.name] = works
        return news
