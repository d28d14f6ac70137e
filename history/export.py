"""CSV export of exactly what the history API answers, every page of it, streamed (never all in memory).

Rows come a page at a time: raw ones from the storage engine's streaming reads (pages of rows formatted by the
database, each on a connection taken for that page only), aggregates a page of keys at a time (history/answers.py).
What Python formats, it formats on Django's sync thread, not on the event loop that acknowledges devices.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass

from asgiref.sync import sync_to_async

from core.epoch import iso_ms
from core.spreadsheet import cell_safe
from history.answers import Cursor, aggregate_keys
from history.selectors import HistoryQuery, readings_aggregate
from storage.engine import Reads
from storage.engines import engine

CSV_HEADER = b"ts,time,key,value\n"
CSV_BAND_HEADER = b"ts,time,key,value,min,max\n"
_CSV_FLUSH_BYTES = 64 * 1024


def _csv_line(cells: list) -> str:
    return ",".join("" if c is None else str(c) for c in cells) + "\n"


@dataclass(frozen=True, slots=True)
class CsvPage:
    text: bytes
    next: Cursor | None


def aggregate_csv(query: HistoryQuery, *, band: bool, budget: int, timeout: float, cursor: Cursor | None) -> CsvPage:
    """A page of an aggregate's keys, as CSV lines (on Django's sync thread: never on the event loop)."""
    page, following = aggregate_keys(query, budget=budget, cursor=cursor)
    with engine().bounded(timeout):
        data = readings_aggregate(page, band=band)
    text = "".join(
        _csv_line([p["ts"], iso_ms(p["ts"]), cell_safe(key), p["value"], *([p["min"], p["max"]] if band else [])])
        for key, points in data.items()
        for p in points
    ).encode()
    return CsvPage(text, following)


async def csv_stream(
    query: HistoryQuery,
    *,
    reads: Reads,
    band: bool,
    budget: int,
    timeout: float,
    first: CsvPage | None = None,
) -> AsyncIterator[bytes]:
    """The answer to `query` as CSV. `first`: an aggregate's first page, queried before the response started (so a
    failure is an error answer, not a 200 whose body ends early). A failure midway raises: the server then closes
    the connection without the chunked body's last chunk, and the client sees the export was cut short."""
    yield CSV_BAND_HEADER if band else CSV_HEADER
    if query.agg != "NONE":
        page = first or await sync_to_async(aggregate_csv)(
            query, band=band, budget=budget, timeout=timeout, cursor=None
        )
        while True:
            yield page.text
            if page.next is None:
                return
            page = await sync_to_async(aggregate_csv)(
                query, band=band, budget=budget, timeout=timeout, cursor=page.next
            )
    # Raw pages arrive in several chunks each (PostgreSQL's COPY); sending each as its own ASGI message capped the
    # export near 100,000 rows/s (bench/history.py): chunks of about 64 KiB.
    pending: list[bytes] = []
    size = 0
    for key in query.keys:
        async for chunk in reads.csv_raw(query, key):
            pending.append(chunk)
            size += len(chunk)
            if size >= _CSV_FLUSH_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
    if pending:
        yield b"".join(pending)
