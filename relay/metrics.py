"""What the relay did, counted once for Prometheus (`/metrics`) and people (`/stats`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .claude.drift import DRIFT
from .pool.account import State
from .pool.client_keys import ClientKey
from .pool.pool import AccountPool

# Seconds; time to first byte is mostly one upstream round trip, whole answers run for minutes.
TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class _Live(Collector):
    """Gauges read at scrape time from the pool and the live streams, so they are never stale."""

    def __init__(self, pool: AccountPool, streams: Callable[[], int], keys: Callable[[], list[ClientKey]]) -> None:
        self._pool = pool
        self._streams = streams
        self._keys = keys

    def collect(self) -> Iterable[Metric]:
        states = GaugeMetricFamily("relay_accounts", "Accounts by state", labels=["state"])
        counts = {s: 0 for s in State}
        for account in self._pool.current():
            counts[account.state] += 1
        for state, n in counts.items():
            states.add_metric([state.value], n)
        yield states
        in_flight = GaugeMetricFamily("relay_requests_in_flight", "Upstream requests in flight")
        in_flight.add_metric([], sum(a.in_flight_here for a in self._pool.accounts))
        yield in_flight
        sessions = GaugeMetricFamily("relay_sessions_open", "Kept claude.ai chats of sessions per account", labels=["account"])
        for account in self._pool.accounts:
            sessions.add_metric([account.alias], account.open_sessions)
        yield sessions
        used = GaugeMetricFamily(
            "relay_account_window_utilization", "Share of a quota window used (0..1)", labels=["account", "window"]
        )
        resets = GaugeMetricFamily(
            "relay_account_window_resets_at", "When a quota window resets (unix seconds)", labels=["account", "window"]
        )
        for account in self._pool.accounts:
            for name, window in (account.usage or {}).items():
                used.add_metric([account.alias, name], window.utilization)
                if window.resets_at:
                    resets.add_metric([account.alias, name], window.resets_at)
        yield used
        yield resets
        requests = CounterMetricFamily("relay_client_requests", "Requests by client key name", labels=["key"])
        tokens = CounterMetricFamily("relay_client_tokens", "Estimated tokens by client key name", labels=["key", "direction"])
        for key in self._keys():
            requests.add_metric([key.name], key.requests)
            tokens.add_metric([key.name, "in"], key.tokens_in)
            tokens.add_metric([key.name, "out"], key.tokens_out)
        yield requests
        yield tokens
        unknown = CounterMetricFamily(
            "relay_upstream_unknown",
            "Event, content-block, delta and error types claude.ai sent that relay does not know",
            labels=["kind", "type"],
        )
        for entry in DRIFT.entries():
            unknown.add_metric([entry.kind, entry.name], entry.count)
        yield unknown
        streams = GaugeMetricFamily("relay_streams_open", "Client streams open")
        streams.add_metric([], self._streams())
        yield streams


class Metrics:
    """One registry per app (tests run several apps in one process)."""

    def __init__(self, pool: AccountPool, streams: Callable[[], int], keys: Callable[[], list[ClientKey]] = list) -> None:
        self.started = time.time()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("relay_requests", "Requests answered", ["route", "model", "status"], registry=r)
        self.ttfb = Histogram("relay_ttfb_seconds", "Time to first byte of answers", ["route"], buckets=TTFB_BUCKETS, registry=r)
        self.duration = Histogram(
            "relay_request_duration_seconds", "Request duration", ["route"], buckets=DURATION_BUCKETS, registry=r
        )
        self.failovers = Counter("relay_failovers", "Attempts moved to another account, by cause", ["cause"], registry=r)
        self.upstream_errors = Counter("relay_upstream_errors", "Upstream failures by class", ["kind"], registry=r)
        self.tokens = Counter("relay_tokens", "Estimated tokens", ["direction"], registry=r)
        self.chats_deleted = Counter("relay_chats_deleted", "Chats deleted after use", registry=r)
        self.chat_delete_failures = Counter("relay_chat_delete_failures", "Chats that could not be deleted", registry=r)
        self.fallbacks = Counter(
            "relay_fallbacks", "Requests answered by a fallback provider", ["provider", "outcome"], registry=r
        )
        self.structured_outputs = Counter(
            "relay_structured_outputs",
            "Structured answers: valid at once, repaired in one more turn, or failed",
            ["outcome"],
            registry=r,
        )
        self.session_turns = Counter(
            "relay_session_turns",
            "Turns by how their claude.ai chat was found: continued, branched, or fresh (by reason)",
            ["kind", "reason"],
            registry=r,
        )
        r.register(_Live(pool, streams, keys))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """Every counter and gauge as plain JSON: {metric: value or {label=value,...: value}}."""
        out: dict[str, Any] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith(("_created", "_bucket")):
                    continue
                key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                if key:
                    out.setdefault(sample.name, {})[key] = sample.value
                else:
                    out[sample.name] = sample.value
        return out
