"""CSV export of exactly what the history API answers, streamed in chunks (never all in memory)."""

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async

from core.epoch import iso_ms
from core.spreadsheet import cell_safe
from history.selectors import HistoryQuery, readings_aggregate
from storage.engine import Reads

CSV_HEADER = b"ts,time,key,value\n"
CSV_BAND_HEADER = b"ts,time,key,value,min,max\n"
_CSV_CHUNK = 10_000
_CSV_FLUSH_BYTES = 64 * 1024


def _csv_line(cells: list) -> str:
    return ",".join("" if c is None else str(c) for c in cells) + "\n"


async def csv_stream(
    query: HistoryQuery, *, reads: Reads, band: bool = False, aggregated: dict[str, list[dict]] | None = None
) -> AsyncIterator[bytes]:
    """Exactly what the JSON API returns for `query`, as CSV, streamed in chunks (never all in memory).

    `aggregated`: the aggregate, queried before the response started (so a failure is an error answer, not a
    200 whose body ends early). A raw export that fails midway raises: the server then closes the connection
    without the chunked body's last chunk, and the client sees the export was cut short."""
    yield CSV_BAND_HEADER if band else CSV_HEADER
    if query.agg != "NONE":
        data = aggregated if aggregated is not None else await sync_to_async(readings_aggregate)(query, band=band)
        for key, points in data.items():
            cell = cell_safe(key)
            for i in range(0, len(points), _CSV_CHUNK):
                yield "".join(
                    _csv_line([p["ts"], iso_ms(p["ts"]), cell, p["value"], *([p["min"], p["max"]] if band else [])])
                    for p in points[i : i + _CSV_CHUNK]
                ).encode()
        return
    # `reads` hands rows over as they come (one at a time from PostgreSQL's COPY); sending each as its own ASGI
    # message capped the export near 100,000 rows/s (bench/history.py): chunks of about 64 KiB.
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
