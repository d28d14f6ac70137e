"""Hub settings, read from HUB_* environment variables (listed in .env.example and docs/configuration.md)."""

import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
import plotly
from django.core.exceptions import ImproperlyConfigured

from core.env import env_bool, env_choice, env_float, env_int, env_list, env_optional, env_str
from hub.roles import SERVED as SERVED_ROLES
from storage.timescale import MODES as TIMESCALE_MODES

BASE_DIR = Path(__file__).resolve().parent.parent


def _var_dir() -> Path:
    """HUB_VAR_DIR; else var/ of a source checkout (beside manage.py); else the user's state directory (an
    installed hub must not write into site-packages)."""
    if configured := env_optional("HUB_VAR_DIR"):
        return Path(configured)
    if (BASE_DIR / "manage.py").exists():
        return BASE_DIR / "var"
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "telemetry-hub"


VAR_DIR = _var_dir()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """HUB_SECRET_KEY, or (embedded default) a random key kept in var/ so sessions survive restarts."""
    if key := env_optional("HUB_SECRET_KEY"):
        return key
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("HUB_DEBUG", False)
ALLOWED_HOSTS = env_list("HUB_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("HUB_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "accounts.apps.HubAdminConfig",  # django.contrib.admin, its site asking the policy
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "hub",
    "devices",
    "storage",
    "dashboards",
    "bridge",
    "alerts",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI as static files: the docs page works offline
    "api",
    "accounts",
    "control",
    "axes",
]

MIDDLEWARE = [
    "hub.middleware.RequestIdMiddleware",
    "hub.middleware.RefuseNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "hub.middleware.MethodNotAllowedPage",  # a page, not a blank 405, for a GET to a form's address
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "hub.middleware.ContentSecurityPolicyMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: turns a lockout into its 429 answer
]

# Operator logins (docs/deployment.md, "Hardening"): django-axes counts failed logins per username and client IP in
# the database (shared by every hub process) and refuses that pair for a while after too many.
# Passwords people choose (createoperator, /api/v1/users, the admin): Django's four checks.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("HUB_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("HUB_LOGIN_COOLOFF_MINUTES", 15.0, minimum=0.01))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # one attacker cannot lock an operator out everywhere
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False


def _remote_addr(request: Any) -> str | None:
    """The peer address, which uvicorn rewrites only for HUB_TRUSTED_PROXIES: never X-Forwarded-For as sent."""
    return request.META.get("REMOTE_ADDR")


# Explicit, so installing django-ipware (which axes would then use, reading client-sent headers) changes nothing.
AXES_CLIENT_IP_CALLABLE = _remote_addr


def _trusted_proxies() -> list[str]:
    """HUB_TRUSTED_PROXIES, checked as uvicorn parses it (which silently keeps a typo as a never-matching name)."""
    proxies = env_list("HUB_TRUSTED_PROXIES", [])
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy) if "/" in proxy else ipaddress.ip_address(proxy)
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"HUB_TRUSTED_PROXIES: {exc} (list IP addresses or networks: 127.0.0.1,10.0.0.0/8)"
            ) from None
    return proxies


# Proxies whose X-Forwarded-For and X-Forwarded-Proto uvicorn believes (hub/server.py); none by default: the peer
# is the client, and the login and provisioning throttles count per address (docs/deployment.md, "Client addresses").
HUB_TRUSTED_PROXIES = _trusted_proxies()

# HTTPS behind a TLS-terminating proxy (docs/deployment.md): the header the proxy sets, as "Name: value".
HUB_SECURE_PROXY_SSL_HEADER = env_optional("HUB_SECURE_PROXY_SSL_HEADER")
if HUB_SECURE_PROXY_SSL_HEADER:
    _name, _, _value = HUB_SECURE_PROXY_SSL_HEADER.partition(":")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _name.strip().upper().replace("-", "_"), _value.strip())
# Served over HTTPS: cookies only over HTTPS, and plain HTTP redirected (but the probes, which come from inside).
HUB_HTTPS = env_bool("HUB_HTTPS", bool(HUB_SECURE_PROXY_SSL_HEADER))
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HUB_HTTPS
SECURE_SSL_REDIRECT = env_bool("HUB_SSL_REDIRECT", HUB_HTTPS)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("HUB_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HUB_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("HUB_HSTS_PRELOAD", False)

ROOT_URLCONF = "hub.urls"
ASGI_APPLICATION = "hub.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context.access",
            ],
        },
    },
]

# Embedded default: a SQLite file in var/, no server needed. Production: postgresql://...
DATABASE_URL = env_str("HUB_DATABASE_URL", f"sqlite:///{VAR_DIR / 'hub.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Under ASGI, per-thread persistent connections leak; psycopg's pool is the documented alternative.
    DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 1, "max_size": env_int("HUB_DB_POOL_SIZE", 10, minimum=1)}}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the ingest writer's own connection commit while pages read.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Embedded default: the in-memory layer (one process only). With HUB_REDIS_URL: channels-redis.
# Several comma-separated URLs shard groups over several Redis servers.
REDIS_URLS = env_list("HUB_REDIS_URL", [])
CHANNEL_LAYER_KIND = env_str("HUB_CHANNEL_LAYER", "pubsub")
if REDIS_URLS:
    _backend = {
        "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "core": "channels_redis.core.RedisChannelLayer",
    }[CHANNEL_LAYER_KIND]
    # HUB_CHANNEL_PREFIX separates hubs (or test runs) sharing one Redis.
    _prefix = env_str("HUB_CHANNEL_PREFIX", "asgi")
    # redis-py 8 reads with a 5 s socket timeout by default, which races the core layer's 5 s BZPOPMIN and
    # tears idle consumers down (django/channels_redis#422); 10 s keeps reads bounded and blocking pops whole.
    _hosts = [{"address": url, "socket_timeout": 10} for url in REDIS_URLS]
    CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
        "default": {"BACKEND": _backend, "CONFIG": {"hosts": _hosts, "prefix": _prefix}}
    }
    if CHANNEL_LAYER_KIND == "core":
        _capacity = env_int("HUB_CHANNEL_CAPACITY", 1000, minimum=1)
        CHANNEL_LAYERS["default"]["CONFIG"].update(
            capacity=_capacity,
            # A process's own channels are its dashboard streams' shared one (dashboards/broadcast.py), which
            # carries every followed device's messages, and the watchdog's: the core layer would drop past
            # `capacity`, silently. (Its receive serves one prefix per process: both keep "specific".)
            channel_capacity={"specific.*": 100 * _capacity},
            group_expiry=env_int("HUB_GROUP_EXPIRY", 86400, minimum=1),
        )
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# What a `serve` process does (docs/deployment.md, "Roles"): all (the default), ingest (devices: WebSocket and
# HTTP ingest, the writer, alerts) or stream (the dashboards' live WebSockets), so viewers never share an
# event loop with device acks. `serve --role` sets it.
HUB_ROLE = env_choice("HUB_ROLE", "all", tuple(role.value for role in SERVED_ROLES))
# A stream process lowers its own CPU priority by this much (nice), so on a shared machine the devices'
# acks and the database win the CPU over the viewers' fan-out. 0 leaves it alone.
HUB_STREAM_NICE = env_int("HUB_STREAM_NICE", 5)

# MQTT broker of the bridge (docs/mqtt.md); when set, /readyz also checks it.
HUB_MQTT_URL = env_optional("HUB_MQTT_URL")
# The broker's dynamic-security administrator, mqtt://user:password@host:port (docs/mqtt.md, "Credentials that follow
# the registry"): when set, devices created, rotated or deleted are logged in or out at the broker at once.
HUB_MQTT_ADMIN_URL = env_optional("HUB_MQTT_ADMIN_URL")

# Ingest limits (docs/payload.md).
HUB_MAX_MESSAGE_BYTES = env_int("HUB_MAX_MESSAGE_BYTES", 64 * 1024, minimum=1)
HUB_MAX_READINGS_PER_MESSAGE = env_int("HUB_MAX_READINGS_PER_MESSAGE", 1000, minimum=1)
HUB_MAX_FUTURE_SECONDS = env_int("HUB_MAX_FUTURE_SECONDS", 600)
HUB_MAX_PAST_DAYS = env_int("HUB_MAX_PAST_DAYS", 365)
HUB_MAX_KEYS_PER_DEVICE = env_int("HUB_MAX_KEYS_PER_DEVICE", 1000)  # distinct keys per device; 0 = no limit
# uvicorn drops frames over this with close code 1009; a bit above the message limit so a message
# just over it gets a named error frame instead.
HUB_WS_MAX_SIZE = env_int("HUB_WS_MAX_SIZE", 2 * HUB_MAX_MESSAGE_BYTES, minimum=1024)

# The writer (docs/storage.md).
HUB_WRITER_FLUSH_MS = env_float("HUB_WRITER_FLUSH_MS", 20.0, minimum=1.0)
HUB_WRITER_FLUSH_WHEN_IDLE = env_bool("HUB_WRITER_FLUSH_WHEN_IDLE", True)  # group commit: ingest/writer.py
HUB_WRITER_BATCH_ROWS = env_int("HUB_WRITER_BATCH_ROWS", 20_000, minimum=1)
HUB_WRITER_MAX_PENDING_ROWS = env_int("HUB_WRITER_MAX_PENDING_ROWS", 200_000, minimum=1)
HUB_WRITER_DRAIN_SECONDS = env_float("HUB_WRITER_DRAIN_SECONDS", 10.0)
# TimescaleDB (docs/storage.md): auto uses it where the server can, on requires it, off never touches it.
HUB_TIMESCALE = env_choice("HUB_TIMESCALE", "auto", TIMESCALE_MODES)
HUB_TIMESCALE_CHUNK_INTERVAL = env_str("HUB_TIMESCALE_CHUNK_INTERVAL", "1 day")
# TimescaleDB compresses chunks older than this (a PostgreSQL interval; 0 = never), set at each `migrate`.
HUB_COMPRESS_AFTER = env_str("HUB_COMPRESS_AFTER", "1 day")
HUB_WS_MAX_INFLIGHT_FRAMES = env_int("HUB_WS_MAX_INFLIGHT_FRAMES", 1000, minimum=1)
# After-commit consumers (publisher, alert engine): a consumer this many readings behind sheds its backlog.
HUB_CONSUMER_MAX_ROWS = env_int("HUB_CONSUMER_MAX_ROWS", 200_000, minimum=1)
# Connections of the pool that streaming reads (CSV export) use; never the writer's.
HUB_READ_POOL_SIZE = env_int("HUB_READ_POOL_SIZE", 4, minimum=1)

# Abuse limits (docs/reliability.md).
HUB_DEVICE_RATE_LIMIT = env_float("HUB_DEVICE_RATE_LIMIT", 0.0)  # readings/s per device and process; 0 = off
HUB_DEVICE_RATE_BURST = env_float("HUB_DEVICE_RATE_BURST", 0.0)  # bucket size; 0 = 2 s worth of the rate
HUB_TOKEN_RECHECK_SECONDS = env_float("HUB_TOKEN_RECHECK_SECONDS", 5.0, minimum=0.1)
HUB_WS_PING_INTERVAL = env_float("HUB_WS_PING_INTERVAL", 20.0, minimum=0.1)
HUB_WS_PING_TIMEOUT = env_float("HUB_WS_PING_TIMEOUT", 20.0, minimum=0.1)
HUB_MAX_CONNECTIONS = env_int("HUB_MAX_CONNECTIONS", 20_000, minimum=1)
# Slow clients (hub/protocols.py): a request's headers (and a WebSocket handshake) within this many seconds, its
# body within that many after its headers; otherwise the connection is closed.
HUB_HTTP_HEADER_TIMEOUT_SECONDS = env_float("HUB_HTTP_HEADER_TIMEOUT_SECONDS", 10.0, minimum=0.1)
HUB_HTTP_BODY_TIMEOUT_SECONDS = env_float("HUB_HTTP_BODY_TIMEOUT_SECONDS", 60.0, minimum=0.1)
# A client that reads nothing of its answer (a CSV export, a page) for this long is disconnected (hub/protocols.py).
HUB_HTTP_SEND_TIMEOUT_SECONDS = env_float("HUB_HTTP_SEND_TIMEOUT_SECONDS", 30.0, minimum=0.1)

# History API (docs/history.md): raw points per key, points of one answer across its keys (more come in pages),
# rows of one CSV export across its keys.
HUB_HISTORY_MAX_LIMIT = env_int("HUB_HISTORY_MAX_LIMIT", 10_000, minimum=1)
HUB_HISTORY_MAX_POINTS = env_int("HUB_HISTORY_MAX_POINTS", 100_000, minimum=100)
HUB_HISTORY_CSV_MAX_ROWS = env_int("HUB_HISTORY_CSV_MAX_ROWS", 10_000_000, minimum=1)
# Heavy reads (CSV exports, JSON answers that may hold more than HUB_READS_LIGHT_POINTS) in flight per operator or
# API token and per process (429 past either); a read's database statement stops after HUB_READ_TIMEOUT_SECONDS.
# A heavy read keeps about a core busy (the database's and the hub's share): by default they get half the CPUs, and
# the devices' acks the rest (bench/reads.py: on 2 CPUs, 2 at a time put ack p99 past 1.5x alone with 4 readers).
HUB_READS_PER_CLIENT = env_int("HUB_READS_PER_CLIENT", 2, minimum=1)
HUB_READS_PER_PROCESS = env_int("HUB_READS_PER_PROCESS", max(1, (os.cpu_count() or 2) // 2), minimum=1)
HUB_READS_LIGHT_POINTS = env_int("HUB_READS_LIGHT_POINTS", 20_000, minimum=0)
HUB_READ_TIMEOUT_SECONDS = env_float("HUB_READ_TIMEOUT_SECONDS", 30.0, minimum=0.01)
HUB_HISTORY_MAX_BUCKETS = env_int("HUB_HISTORY_MAX_BUCKETS", 10_000, minimum=1)
HUB_HISTORY_MAX_RANGE_DAYS = env_int("HUB_HISTORY_MAX_RANGE_DAYS", 3660, minimum=1)

# Operator API (docs/api.md): request bodies above these sizes are refused with 413; a bulk import holds at
# most HUB_API_BULK_MAX_DEVICES devices (one transaction); provisioning attempts per client address and process.
HUB_API_MAX_BODY_BYTES = env_int("HUB_API_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
HUB_API_BULK_MAX_BYTES = env_int("HUB_API_BULK_MAX_BYTES", 32 * 1024 * 1024, minimum=1024)
HUB_API_BULK_MAX_DEVICES = env_int("HUB_API_BULK_MAX_DEVICES", 50_000, minimum=1)
HUB_API_PAGE_SIZE = env_int("HUB_API_PAGE_SIZE", 100, minimum=1)
HUB_PROVISION_RATE_LIMIT = env_float("HUB_PROVISION_RATE_LIMIT", 2.0, minimum=0.001)
HUB_PROVISION_RATE_BURST = env_float("HUB_PROVISION_RATE_BURST", 20.0, minimum=1.0)

REST_FRAMEWORK = {
    # A bearer API token first (its 401 names the scheme), then the session of a logged-in operator, whose
    # writes must carry the CSRF token (SessionAuthentication enforces it).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.access.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.access.Allowed"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.rest.BoundedJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "api.rest.JsonOnly",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "URL_FORMAT_OVERRIDE": None,  # `?format=` is no switch of ours
}
SPECTACULAR_SETTINGS = {
    "TITLE": "the hub: operator API",
    "DESCRIPTION": "Devices, provisioning, alert rules and states, API tokens and telemetry history (docs/api.md).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Retention (days; 0 keeps forever). Every hub process checks each interval; one applies it (docs/history.md).
HUB_RAW_RETENTION_DAYS = env_int("HUB_RAW_RETENTION_DAYS", 0)
HUB_ROLLUP_1M_RETENTION_DAYS = env_int("HUB_ROLLUP_1M_RETENTION_DAYS", 0)
HUB_ROLLUP_1H_RETENTION_DAYS = env_int("HUB_ROLLUP_1H_RETENTION_DAYS", 0)
HUB_RETENTION_INTERVAL_SECONDS = env_int("HUB_RETENTION_INTERVAL_SECONDS", 3600, minimum=1)
# The audit trail's (docs/security.md), pruned by the same processes at the same interval; 0 keeps it forever.
HUB_AUDIT_RETENTION_DAYS = env_int("HUB_AUDIT_RETENTION_DAYS", 365)

# Talking back to devices (docs/commands.md): attributes and commands, bounded per device.
HUB_ATTRIBUTES_MAX_PER_SCOPE = env_int("HUB_ATTRIBUTES_MAX_PER_SCOPE", 256, minimum=1)
HUB_ATTRIBUTE_MAX_BYTES = env_int("HUB_ATTRIBUTE_MAX_BYTES", 4096, minimum=16)
HUB_COMMANDS_MAX_OPEN = env_int("HUB_COMMANDS_MAX_OPEN", 100, minimum=1)  # queued or awaiting a response
HUB_COMMAND_MAX_BYTES = env_int("HUB_COMMAND_MAX_BYTES", 16 * 1024, minimum=64)  # params, and a response
HUB_COMMAND_TIMEOUT_MAX_SECONDS = env_int("HUB_COMMAND_TIMEOUT_MAX_SECONDS", 600, minimum=1)
HUB_COMMAND_PERSISTENT_SECONDS = env_int("HUB_COMMAND_PERSISTENT_SECONDS", 7 * 86400, minimum=1)
HUB_DEVICE_POLL_MAX_SECONDS = env_float("HUB_DEVICE_POLL_MAX_SECONDS", 60.0, minimum=0.1)  # HTTP long-polls
HUB_DEVICE_POLLS_PER_DEVICE = env_int("HUB_DEVICE_POLLS_PER_DEVICE", 4, minimum=1)  # open at once, per process

# Alerts (docs/alerts.md).
HUB_ALERT_RULES_REFRESH_SECONDS = env_float("HUB_ALERT_RULES_REFRESH_SECONDS", 5.0)
HUB_ALERT_SILENCE_CHECK_SECONDS = env_float("HUB_ALERT_SILENCE_CHECK_SECONDS", 5.0, minimum=0.1)
HUB_ALERT_WEBHOOK_URL = env_str("HUB_ALERT_WEBHOOK_URL", "")
HUB_ALERT_WEBHOOK_SECRET = env_str("HUB_ALERT_WEBHOOK_SECRET", "")
HUB_ALERT_WEBHOOK_TIMEOUT_SECONDS = env_float("HUB_ALERT_WEBHOOK_TIMEOUT_SECONDS", 5.0, minimum=0.1)
HUB_ALERT_WEBHOOK_MAX_ATTEMPTS = env_int("HUB_ALERT_WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)
HUB_ALERT_WEBHOOK_BACKOFF_SECONDS = env_float("HUB_ALERT_WEBHOOK_BACKOFF_SECONDS", 1.0, minimum=0.0)
HUB_ALERT_WEBHOOK_POLL_SECONDS = env_float("HUB_ALERT_WEBHOOK_POLL_SECONDS", 0.5, minimum=0.05)
# Hosts and CIDRs inside the hub's network that webhooks may reach (alerts/destinations.py); public ones always.
HUB_ALERT_WEBHOOK_ALLOW = env_list("HUB_ALERT_WEBHOOK_ALLOW", [])

# Dashboards (docs/dashboards.md, docs/stream-protocol.md).
HUB_ONLINE_WINDOW_SECONDS = env_int("HUB_ONLINE_WINDOW_SECONDS", 120, minimum=1)
HUB_STREAM_CATCHUP_LIMIT = env_int("HUB_STREAM_CATCHUP_LIMIT", 20_000, minimum=1)
# Live readings reach a stream at most once per tick (merged meanwhile); a stream whose socket takes nothing
# for the stall time while more waits, or with the bound waiting, has stopped reading: 4008 (dashboards/broadcast.py).
HUB_STREAM_TICK_MS = env_int("HUB_STREAM_TICK_MS", 100, minimum=1)
HUB_STREAM_STALL_SECONDS = env_float("HUB_STREAM_STALL_SECONDS", 10.0, minimum=0.1)
HUB_STREAM_MAX_PENDING_KIB = env_int("HUB_STREAM_MAX_PENDING_KIB", 16 * 1024, minimum=1)
# Dashboard streams survive channel-layer trouble (dashboards/watchdog.py): probe every N s; re-add open
# streams to their groups every M s (must stay below the core layer's HUB_GROUP_EXPIRY).
HUB_STREAM_WATCHDOG_SECONDS = env_float("HUB_STREAM_WATCHDOG_SECONDS", 1.0, minimum=0.05)
HUB_STREAM_REJOIN_SECONDS = env_float("HUB_STREAM_REJOIN_SECONDS", 60.0, minimum=0.1)
# Fleet page: each hub process publishes at most one digest of its committed readings per interval.
HUB_FLEET_DIGEST_SECONDS = env_float("HUB_FLEET_DIGEST_SECONDS", 1.0, minimum=0.05)
# How soon a device that leaves a scoped person's label scope leaves their open streams (docs/security.md).
HUB_STREAM_SCOPE_REFRESH_SECONDS = env_float("HUB_STREAM_SCOPE_REFRESH_SECONDS", 2.0, minimum=0.1)

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# plotly.js comes from the installed plotly package, so dashboards work offline (no CDN).
STATICFILES_DIRS = [("plotly", Path(plotly.__file__).parent / "package_data")]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboards:fleet"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("HUB_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

# HUB_LOG_FORMAT=json: one JSON object per line (python-json-logger). Every line passes the token filter.
HUB_LOG_FORMAT = env_str("HUB_LOG_FORMAT", "plain")
HUB_LOG_LEVEL = env_str("HUB_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_tokens": {"()": "core.logs.RedactTokensFilter"},
        "request_id": {"()": "core.logs.RequestIdFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if HUB_LOG_FORMAT == "json" else "plain",
            "filters": ["redact_tokens", "request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": HUB_LOG_LEVEL},
    "loggers": {
        name: {"handlers": ["console"], "level": HUB_LOG_LEVEL, "propagate": False}
        for name in ("uvicorn", "uvicorn.access", "django")
    },
}
