"""Prometheus metrics of the hub (served at /metrics).

With several worker processes, `manage.py serve` sets PROMETHEUS_MULTIPROC_DIR before the workers start,
so every process writes its samples there and /metrics aggregates them (prometheus-client's multiprocess
mode); gauges then sum over live processes.
"""

from functools import cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

READINGS_RECEIVED = Counter("hub_readings_received", "Valid readings received", ["transport"])
READINGS_STORED = Counter("hub_readings_stored", "Readings committed (duplicates included)", ["transport"])
MESSAGES_REJECTED = Counter("hub_messages_rejected", "Messages refused as a whole", ["transport", "code"])
ACK_LATENCY = Histogram(
    "hub_ack_latency_seconds", "From queueing a message to its commit (= ack)", ["transport"], buckets=_LATENCY_BUCKETS
)
WRITER_BATCH_ROWS = Histogram(
    "hub_writer_batch_rows", "Readings per flush", buckets=(1, 10, 100, 1_000, 5_000, 10_000, 20_000, 50_000)
)
WRITER_FLUSH_SECONDS = Histogram("hub_writer_flush_seconds", "Duration of a committed flush", buckets=_LATENCY_BUCKETS)
WRITER_RETRIES = Counter("hub_writer_retries", "Flushes retried after a transient database error")
WRITER_QUEUE_ROWS = Gauge("hub_writer_queue_rows", "Readings waiting for the writer", multiprocess_mode="livesum")
CONNECTED_DEVICES = Gauge("hub_connected_devices", "Open device WebSockets", ["transport"], multiprocess_mode="livesum")
CONNECTED_DASHBOARDS = Gauge("hub_connected_dashboards", "Open dashboard streams", multiprocess_mode="livesum")
# After-commit consumers (ingest/commits.py), labelled by consumer: "publisher", "alerts".
CONSUMER_BACKLOG_ROWS = Gauge(
    "hub_consumer_backlog_rows", "Committed readings not yet taken", ["consumer"], multiprocess_mode="livesum"
)
CONSUMER_MERGED = Counter("hub_consumer_merged", "Flushes merged into a backlog (it fell behind)", ["consumer"])
CONSUMER_SHED_READINGS = Counter(
    "hub_consumer_shed_readings", "Committed readings a consumer dropped unseen (its backlog overflowed)", ["consumer"]
)
CONSUMER_LAG_SECONDS = Histogram(
    "hub_consumer_lag_seconds", "From commit to a consumer taking the readings", ["consumer"], buckets=_LATENCY_BUCKETS
)
CONSUMER_FAILURES = Counter("hub_consumer_failures", "Consumer calls that raised (logged, not retried)", ["consumer"])
# Dashboard streams (dashboards/broadcast.py).
STREAM_MESSAGES = Counter("hub_stream_messages", "Messages sent to dashboard streams")
STREAM_MERGED = Counter("hub_stream_merged", "Stream messages that carried several ticks' readings (a viewer behind)")
STREAM_SLOW_CLOSED = Counter("hub_stream_slow_closed", "Dashboard streams closed for not reading (4008)")
STREAM_LAG_SECONDS = Histogram(
    "hub_stream_lag_seconds", "From publishing a flush to handing it to the streams", buckets=_LATENCY_BUCKETS
)
# Connections closed for a request that did not arrive in time (hub/protocols.py): headers, body, handshake.
HTTP_READ_TIMEOUTS = Counter(
    "hub_http_read_timeouts",
    "Connections closed for a slow request (headers, body) or a client not reading (send)",
    ["phase"],
)
# The MQTT bridge worker (its own process; served by `mqtt_bridge` on HUB_MQTT_METRICS_PORT). Its received,
# stored and rejected readings are the hub_* counters above with transport="mqtt".
BRIDGE_ACKED = Counter("hub_bridge_acked", "MQTT messages PUBACKed to the broker after commit (or rejection)")
BRIDGE_INFLIGHT = Gauge("hub_bridge_inflight", "MQTT messages received and not yet committed")
BRIDGE_LAG = Gauge("hub_bridge_lag_seconds", "Age of the oldest MQTT message not yet acknowledged")
MQTT_CREDENTIALS_UNSENT = Counter(
    "hub_mqtt_credentials_unsent", "Registry changes the MQTT broker was not told of (mqtt_dynsec_sync repairs)"
)


# Labelled children, cached: `.labels()` validates and locks on every call, which the hot path should not pay.
@cache
def received(transport: str) -> Counter:
    return READINGS_RECEIVED.labels(transport)


@cache
def stored(transport: str) -> Counter:
    return READINGS_STORED.labels(transport)


@cache
def ack_latency(transport: str) -> Histogram:
    return ACK_LATENCY.labels(transport)


def metrics_exposition(multiproc_dir: str | None) -> tuple[bytes, str]:
    """The text exposition of this process, or of every worker in multiprocess mode."""
    if multiproc_dir:
        registry = CollectorRegistry()
        # prometheus_client does not annotate MultiProcessCollector.
        multiprocess.MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
