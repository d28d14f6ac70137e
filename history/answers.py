"""History answers bounded as a whole, not per key (docs/history.md, "Bounded answers").

An answer holds at most `budget` points across all its keys (HUB_HISTORY_MAX_POINTS). What a query asks beyond it
comes in pages: the answer says so with `next`, a cursor the client sends back (`cursor=`, with the same other
parameters) for the rest; the last page's `next` is null. Raw points fill the page key after key (a key may continue
on the next page); aggregates give whole keys (a key's buckets are bounded on their own, HUB_HISTORY_MAX_BUCKETS). A
live window is decimated instead: fewer pixels and a shorter raw tail per key, as many keys as it draws.

The points of a page are JSON text built by the database (history/selectors.py `points_json`, `aggregate_json`).
"""

import base64
import binascii
from dataclasses import dataclass, replace

import orjson

from history.selectors import (
    WINDOW_TAIL_POINTS,
    HistoryQuery,
    aggregate_json,
    bucket_bounds,
    points_json,
    window_interval,
)


class BadCursor(ValueError):
    """A cursor this hub did not give, or for other parameters."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: the index of its first key and, raw, how far that key has come."""

    key_index: int = 0
    after: int | None = None  # raw: the ts the key continues after (before, newest first); None: its start
    given: int = 0  # raw: the key's points given on earlier pages (its `limit` counts them)

    def encode(self) -> str:
        text = orjson.dumps([self.key_index, self.after, self.given])
        return base64.urlsafe_b64encode(text).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, *, keys: int) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            key_index, after, given = orjson.loads(raw)
        except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
            raise BadCursor("not a cursor of this answer") from None
        if not (isinstance(key_index, int) and 0 <= key_index < keys and isinstance(given, int) and given >= 0):
            raise BadCursor("not a cursor of this answer")
        if after is not None and not isinstance(after, int):
            raise BadCursor("not a cursor of this answer")
        return cls(key_index, after, given)


@dataclass(frozen=True, slots=True)
class Page:
    data: dict[str, str]  # key -> the JSON text of its points
    next: Cursor | None  # None: the answer is complete


def raw_page(query: HistoryQuery, *, budget: int, cursor: Cursor | None = None) -> Page:
    """Up to `query.limit` raw points per key, at most `budget` in all, from `cursor` on."""
    cursor = cursor or Cursor()
    data: dict[str, str] = {}
    for index in range(cursor.key_index, len(query.keys)):
        if budget <= 0:  # this key starts the next page
            return Page(data, Cursor(index))
        key = query.keys[index]
        first = index == cursor.key_index
        given = cursor.given if first else 0
        start, end = query.start, query.end
        if first and cursor.after is not None:  # the key continues after the previous page's last point
            start, end = (start, cursor.after) if query.newest_first else (cursor.after + 1, end)
        wanted = query.limit - given
        take = min(wanted, budget)
        if start >= end:
            data[key] = "[]"
            continue
        points = points_json(
            device_id=query.device_id, key=key, start=start, end=end, limit=take, newest_first=query.newest_first
        )
        data[key] = points.text
        budget -= points.count
        if points.count and points.count == take < wanted:  # the budget stopped this key, not its end: it goes on
            last = points.first if query.newest_first else points.last
            return Page(data, Cursor(index, last, given + points.count))
    return Page(data, None)


def aggregate_keys(
    query: HistoryQuery, *, budget: int, cursor: Cursor | None = None
) -> tuple[HistoryQuery, Cursor | None]:
    """The query of one page of an aggregate: as many whole keys as fit `budget` at the most buckets a key can
    have, from `cursor` on; and the cursor of the page after it (None: the last)."""
    assert query.interval, "aggregates need an interval"  # noqa: S101 - guarded by the API's validation
    first = (cursor or Cursor()).key_index
    start, end = bucket_bounds(query.start, query.end, query.interval)
    per_key = max(1, (end - start) // query.interval)
    keys = query.keys[first : first + max(1, budget // per_key)]
    following = first + len(keys)
    return replace(query, keys=keys), Cursor(following) if following < len(query.keys) else None


def aggregate_page(query: HistoryQuery, *, budget: int, band: bool, cursor: Cursor | None = None) -> Page:
    page, following = aggregate_keys(query, budget=budget, cursor=cursor)
    return Page(aggregate_json(page, band=band), following)


@dataclass(frozen=True, slots=True)
class Window:
    series: dict[str, str]  # key -> the JSON text of {"buckets": [[ts, min, max]...], "raw": [[ts, value]...], "split"}
    interval: int
    px: int  # the width the buckets were cut for (smaller than asked when the keys would not fit the budget)
    tail: int  # raw readings per key at most
    newest: int | None  # the newest raw reading's ts: where the live stream takes over


def window_answer(*, device_id: int, keys: list[str], start: int, end: int, px: int, budget: int) -> Window:
    """A live chart per key at most `budget` points in all (a bucket is two): many keys get fewer pixels and a
    shorter tail each, never a cut-off key."""
    share = budget // max(1, len(keys))
    tail = max(10, min(WINDOW_TAIL_POINTS, share // 2))
    px = max(10, min(px, (share - tail) // 2))
    interval = window_interval(start, end, px)
    series, newest = window_series(device_id=device_id, keys=keys, start=start, end=end, interval=interval, tail=tail)
    return Window(series, interval, px, tail, newest)


def window_series(
    *, device_id: int, keys: list[str], start: int, end: int, interval: int, tail: int
) -> tuple[dict[str, str], int | None]:
    """Per key the JSON text of its chart over [start, end): its newest `tail` raw readings and, when those do not
    reach back to `start`, min/max buckets of `interval` ms for the rest (rollups where the interval fits). The raw
    part starts at a bucket boundary, so the two join with no gap and no reading counted twice. And the newest ts."""
    series, newest = {}, None
    for key in keys:
        raw = points_json(
            device_id=device_id, key=key, start=start, end=end, limit=tail, newest_first=True, oldest_first_out=True,
            pairs=True,
        )  # fmt: skip
        if raw.last is not None:
            newest = max(newest or raw.last, raw.last)
        split, buckets = start, "[]"
        if raw.count == tail and raw.first is not None:  # the window holds more: buckets up to the tail's start
            split = -(-raw.first // interval) * interval  # the first bucket boundary at or after the oldest raw
            raw = points_json(device_id=device_id, key=key, start=split, end=end, limit=tail, pairs=True)
            if split > start:
                older = HistoryQuery(device_id, (key,), start, split, agg="AVG", interval=interval)
                buckets = aggregate_json(older, pairs=True)[key]
        series[key] = f'{{"buckets":{buckets},"raw":{raw.text},"split":{split}}}'
    return series, newest
