"""GET /admin/usage: the usage history over a period, in hourly or daily buckets, grouped by key,
account and/or model, as JSON or CSV."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from aiohttp import web

from ..errors import InvalidRequest
from ..pool.history import DAY, DIMENSIONS, HOUR, Dimension, Query, UsageHistory, totals

PERIOD = re.compile(r"^(\d{1,4})([hd])$")
# At most this much history per query (more than is kept by default).
MAX_SPAN = 400 * DAY
CSV_COLUMNS = ("requests", "errors", "tokens_in", "tokens_out", "ttft_ms")


def moment(text: str, param: str) -> float:
    """Unix seconds or an ISO 8601 date/time (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{param} must be unix seconds or an ISO 8601 time", param=param) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def parse_query(params: Mapping[str, str], now: float) -> Query:
    """The query a request's parameters describe: `period` (e.g. 24h, 7d; default 7d) or `start`
    and `end`, `bucket` (hour or day), `group` (comma list of key, account, model), filters."""
    end = moment(params["end"], "end") if "end" in params else now
    if "start" in params:
        start = moment(params["start"], "start")
    else:
        found = PERIOD.match(params.get("period", "7d"))
        if found is None:
            raise InvalidRequest("period must be a number of hours or days, e.g. 24h or 7d", param="period")
        start = end - int(found[1]) * (HOUR if found[2] == "h" else DAY)
    if not 0 < end - start <= MAX_SPAN:
        raise InvalidRequest("the period must end after it starts and span at most 400 days", param="start")
    bucket = params.get("bucket", "hour" if end - start <= 2 * DAY else "day")
    if bucket not in ("hour", "day"):
        raise InvalidRequest("bucket must be hour or day", param="bucket")
    group: list[Dimension] = []
    for name in filter(None, params.get("group", "key").split(",")):
        dim = next((d for d in DIMENSIONS if d == name.strip()), None)
        if dim is None:
            raise InvalidRequest("group takes key, account and/or model, comma separated", param="group")
        group.append(dim)
    only = tuple((d, params[d]) for d in DIMENSIONS if params.get(d))
    return Query(start, end, HOUR if bucket == "hour" else DAY, tuple(dict.fromkeys(group)), only)


class UsageApi:
    """The usage route, reading the history the middleware records."""

    def __init__(self, history: UsageHistory, clock: Callable[[], float]) -> None:
        self.history = history
        self.clock = clock

    async def usage(self, request: web.Request) -> web.Response:
        q = parse_query(request.query, self.clock())
        rows = await self.history.query(q)
        if request.query.get("format") == "csv":
            return web.Response(text=_csv(q, [r.as_dict(q.group) for r in rows]), content_type="text/csv")
        body = {
            "object": "usage",
            "start": q.start,
            "end": q.end,
            "bucket": "hour" if q.bucket == HOUR else "day",
            "group": list(q.group),
            "partial": self.history.partial,  # Redis away: this replica's own counts only
            "data": [r.as_dict(q.group) for r in rows],
            "totals": {k: v for k, v in totals(rows).items() if not k.startswith("ttft")},
        }
        return web.json_response(body)


def _csv(q: Query, rows: list[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["start", *q.group, *CSV_COLUMNS])
    for row in rows:
        start = datetime.fromtimestamp(float(str(row["start"])), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        writer.writerow([start, *(row[d] for d in q.group), *("" if row[c] is None else row[c] for c in CSV_COLUMNS)])
    return out.getvalue()
