"""The cyclic garbage collector, set for a long-running hub process (measured in docs/benchmarks.md).

- Generation 0 is collected every 200,000 new containers, not CPython's 700. Ingest makes several per reading
  (the parsed JSON objects, a Reading, a row tuple, a wire list), so at 100,000 readings/s it collected about
  a thousand times a second, and readings waiting in the queue were promoted into, and rescanned by, the
  older generations: a quarter of the event loop (bench/ingest.py at B=100: 134,000 readings/s with
  CPython's thresholds, 176,000-185,000 with 50,000). With thousands of sockets every pass is slow whatever
  its size (35-245 ms for generation 0 at 15,000 device sockets): fewer of them, 200,000 instead of 50,000,
  took bench/scale.py's ack p99 at 15,000 sockets from 349-777 ms to 111-221 ms. The older generations keep
  CPython's ratios.
- What the process made while it started (Django, every module, the URLconf: objects that live as long as
  the process) is frozen out of the collector's passes. A full pass walks every tracked object: a stream
  process holding 1,000 dashboard sockets paused 150-230 ms every 2.5 s, which was most of the viewers'
  p99 latency (bench/dashboards.py).
"""

import contextlib
import gc
from collections.abc import Iterator

GC_THRESHOLDS = (200_000, 10, 10)


def collector_tune() -> None:
    """Raise the cyclic collector's generation-0 threshold, process-wide, unless it is already higher."""
    if 0 < gc.get_threshold()[0] < GC_THRESHOLDS[0]:
        gc.set_threshold(*GC_THRESHOLDS)


@contextlib.contextmanager
def collector_for_serving() -> Iterator[None]:
    """While a hub process serves: the thresholds above, and its start-up heap left out of full passes
    (given back on the way out, so a process that starts a hub runtime twice, as the tests do, leaks nothing)."""
    collector_tune()
    gc.collect()  # garbage made while starting must not be frozen with the rest
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
