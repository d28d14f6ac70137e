"""How the alert engine and its timers behave (docs/alerts.md), read once at start-up."""

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    default_url: str = ""  # where a rule without its own webhook URL sends (HUB_ALERT_WEBHOOK_URL)
    secret: str = ""  # signs each delivery (X-Hub-Signature-256) when set
    timeout_seconds: float = 5.0
    max_attempts: int = 8
    backoff_seconds: float = 1.0  # doubles per attempt, at most 300 s
    poll_seconds: float = 0.5  # how often due deliveries are looked for


@dataclass(frozen=True, slots=True)
class AlertConfig:
    rules_refresh_seconds: float = 5.0  # the rule snapshot's age at most; 0: reloaded before every batch (tests)
    silence_check_seconds: float = 5.0  # how often no-data and offline rules are evaluated
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
