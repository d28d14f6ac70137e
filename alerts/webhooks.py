"""Webhook delivery: JSON POSTs signed with HMAC-SHA256, retried with backoff, then recorded as failed.

Runs as its own task (a loop of the hub runtime), reading due deliveries from the database, so a slow or
dead receiver never touches ingest. Several hub processes may run it: rows are claimed with
SELECT … FOR UPDATE SKIP LOCKED on PostgreSQL.
"""

import asyncio
import hashlib
import hmac
import logging
from datetime import timedelta

import httpx
import orjson
from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from alerts.config import WebhookConfig
from alerts.destinations import Refused, webhook_destination
from alerts.models import WebhookDelivery
from storage.engines import engine

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
_BATCH = 50


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex>` of the body, as GitHub signs its webhooks; receivers compare with hmac.compare_digest."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _claim(config: WebhookConfig) -> list[tuple[int, str, dict, int]]:
    """Due deliveries, pushed into the future so no other worker takes them while we send."""
    with transaction.atomic():
        due = WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=timezone.now()
        ).order_by("next_attempt_at")
        if engine().skip_locked:
            due = due.select_for_update(skip_locked=True)
        rows = list(due.values_list("id", "url", "payload", "attempts")[:_BATCH])
        lease = timezone.now() + timedelta(seconds=config.timeout_seconds * 2)
        WebhookDelivery.objects.filter(id__in=[r[0] for r in rows]).update(next_attempt_at=lease)
    return rows


def _settle(config: WebhookConfig, delivery_id: int, attempts: int, error: str | None) -> None:
    if error is None:
        WebhookDelivery.objects.filter(id=delivery_id).update(status=WebhookDelivery.Status.SENT, attempts=attempts)
        return
    failed = attempts >= config.max_attempts
    backoff = min(config.backoff_seconds * 2 ** (attempts - 1), 300)
    WebhookDelivery.objects.filter(id=delivery_id).update(
        status=WebhookDelivery.Status.FAILED if failed else WebhookDelivery.Status.PENDING,
        attempts=attempts,
        last_error=error[:1000],
        next_attempt_at=timezone.now() + timedelta(seconds=backoff),
    )
    if failed:
        logger.warning("webhook delivery %d to %s failed after %d attempts: %s", delivery_id, "…", attempts, error)


async def _send(
    config: WebhookConfig, client: httpx.AsyncClient, delivery_id: int, url: str, payload: dict, attempts: int
) -> None:
    body = orjson.dumps(payload)
    headers = {"Content-Type": "application/json", "X-Hub-Event": payload["type"], "X-Hub-Delivery": str(delivery_id)}
    if config.secret:
        headers[SIGNATURE_HEADER] = signature(config.secret, body)
    try:
        target = await webhook_destination(url)  # checked again now, and connected to by the address checked
    except Refused as refused:
        final = max(attempts + 1, config.max_attempts)  # not retried: it would be refused again
        await database_sync_to_async(_settle)(config, delivery_id, final, f"refused: {refused}")
        return
    headers["Host"] = target.host
    try:
        response = await client.post(target.url, content=body, headers=headers, extensions={"sni_hostname": target.sni})
        error = None if response.is_success else f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    await database_sync_to_async(_settle)(config, delivery_id, attempts + 1, error)


async def webhooks_deliver_due(config: WebhookConfig, client: httpx.AsyncClient) -> int:
    rows = await database_sync_to_async(_claim)(config)
    await asyncio.gather(*(_send(config, client, *row) for row in rows))
    return len(rows)


async def webhook_loop(config: WebhookConfig) -> None:
    """A loop of the hub runtime."""
    async with httpx.AsyncClient(timeout=config.timeout_seconds) as client:
        while True:
            try:
                if await webhooks_deliver_due(config, client):
                    continue
            except Exception:
                logger.exception("webhook delivery round failed; retrying")
            await asyncio.sleep(config.poll_seconds)
