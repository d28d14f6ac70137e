"""The typed configuration of one hub process, read from Django's settings (HUB_* variables, hub/settings.py)
once at start-up and handed to the parts the runtime builds: no part reads settings while it runs.

Each part's configuration class lives beside the part (`WriterConfig` in ingest/writer.py, `StreamConfig` in
live/config.py, ...); this module is the one place that fills them from settings. Request handlers (pages, API
views, forms) read Django settings per request, as Django's own do.
"""

from dataclasses import dataclass, field

from django.conf import settings

from alerts.config import AlertConfig, WebhookConfig
from history.admission import ReadConfig
from hub.roles import Role
from ingest.parsing import Limits
from ingest.service import IngestConfig
from ingest.writer import WriterConfig
from live.config import StreamConfig
from storage.retention import RetentionConfig
from transports.shared import TransportConfig


@dataclass(frozen=True, slots=True)
class HubConfig:
    role: Role = Role.ALL
    writer: WriterConfig = field(default_factory=WriterConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    transports: TransportConfig = field(default_factory=TransportConfig)
    streams: StreamConfig = field(default_factory=StreamConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    reads: ReadConfig = field(default_factory=ReadConfig)
    consumer_max_rows: int = 200_000  # an after-commit consumer this many readings behind sheds its backlog
    read_pool_size: int = 4  # connections of the streaming reads (CSV export)
    provision_rate: float = 2.0  # device self-provisioning attempts per second and client address
    provision_burst: float = 20.0
    audit_retention_days: int = 365  # the audit trail's (0: kept forever); pruned every retention interval

    @classmethod
    def from_settings(cls, *, role: Role | None = None) -> "HubConfig":
        """This process's configuration (`role`: instead of HUB_ROLE, as `mqtt_bridge` runs a bridge)."""
        s = settings
        return cls(
            role=role or Role(s.HUB_ROLE),
            writer=WriterConfig(
                flush_interval=s.HUB_WRITER_FLUSH_MS / 1000,
                flush_when_idle=s.HUB_WRITER_FLUSH_WHEN_IDLE,
                batch_rows=s.HUB_WRITER_BATCH_ROWS,
                max_pending_rows=s.HUB_WRITER_MAX_PENDING_ROWS,
                drain_timeout=s.HUB_WRITER_DRAIN_SECONDS,
            ),
            ingest=IngestConfig(
                limits=Limits(
                    max_bytes=s.HUB_MAX_MESSAGE_BYTES,
                    max_readings=s.HUB_MAX_READINGS_PER_MESSAGE,
                    max_future_ms=s.HUB_MAX_FUTURE_SECONDS * 1000,
                    max_past_ms=s.HUB_MAX_PAST_DAYS * 86_400_000,
                ),
                max_keys_per_device=s.HUB_MAX_KEYS_PER_DEVICE,
                device_rate=s.HUB_DEVICE_RATE_LIMIT,
                device_burst=s.HUB_DEVICE_RATE_BURST,
            ),
            transports=TransportConfig(
                max_inflight_frames=s.HUB_WS_MAX_INFLIGHT_FRAMES, token_recheck_seconds=s.HUB_TOKEN_RECHECK_SECONDS
            ),
            streams=StreamConfig(
                tick_seconds=s.HUB_STREAM_TICK_MS / 1000,
                stall_seconds=s.HUB_STREAM_STALL_SECONDS,
                max_pending_chars=s.HUB_STREAM_MAX_PENDING_KIB * 1024,
                catch_up_limit=s.HUB_STREAM_CATCHUP_LIMIT,
                watchdog_seconds=s.HUB_STREAM_WATCHDOG_SECONDS,
                rejoin_seconds=s.HUB_STREAM_REJOIN_SECONDS,
                fleet_digest_seconds=s.HUB_FLEET_DIGEST_SECONDS,
                scope_refresh_seconds=s.HUB_STREAM_SCOPE_REFRESH_SECONDS,
                redis_urls=tuple(s.REDIS_URLS),
            ),
            alerts=AlertConfig(
                rules_refresh_seconds=s.HUB_ALERT_RULES_REFRESH_SECONDS,
                silence_check_seconds=s.HUB_ALERT_SILENCE_CHECK_SECONDS,
                webhooks=WebhookConfig(
                    default_url=s.HUB_ALERT_WEBHOOK_URL,
                    secret=s.HUB_ALERT_WEBHOOK_SECRET,
                    timeout_seconds=s.HUB_ALERT_WEBHOOK_TIMEOUT_SECONDS,
                    max_attempts=s.HUB_ALERT_WEBHOOK_MAX_ATTEMPTS,
                    backoff_seconds=s.HUB_ALERT_WEBHOOK_BACKOFF_SECONDS,
                    poll_seconds=s.HUB_ALERT_WEBHOOK_POLL_SECONDS,
                ),
            ),
            retention=RetentionConfig(
                raw_days=s.HUB_RAW_RETENTION_DAYS,
                rollup_1m_days=s.HUB_ROLLUP_1M_RETENTION_DAYS,
                rollup_1h_days=s.HUB_ROLLUP_1H_RETENTION_DAYS,
                interval_seconds=s.HUB_RETENTION_INTERVAL_SECONDS,
            ),
            reads=ReadConfig(
                max_points=s.HUB_HISTORY_MAX_POINTS,
                csv_rows=s.HUB_HISTORY_CSV_MAX_ROWS,
                light_points=s.HUB_READS_LIGHT_POINTS,
                per_client=s.HUB_READS_PER_CLIENT,
                per_process=s.HUB_READS_PER_PROCESS,
                timeout_seconds=s.HUB_READ_TIMEOUT_SECONDS,
            ),
            consumer_max_rows=s.HUB_CONSUMER_MAX_ROWS,
            read_pool_size=s.HUB_READ_POOL_SIZE,
            provision_rate=s.HUB_PROVISION_RATE_LIMIT,
            provision_burst=s.HUB_PROVISION_RATE_BURST,
            audit_retention_days=s.HUB_AUDIT_RETENTION_DAYS,
        )
