"""Webhook destinations: never inside the hub's network unless the operator allows it (server-side request forgery)."""

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.utils.timezone import now as django_now

from alerts.destinations import webhook_url_problem
from storage.models import LatestValue
from tests.conftest import person

pytestmark = pytest.mark.usefixtures("postgres")


def rule_form(client, **fields) -> tuple[int, str]:
    """POST the alert rules page's form; (status, page text)."""
    data = {"name": "hot", "enabled": "on", "key": "t", "kind": "threshold", "condition": "gt", "threshold": "30",
            "duration_seconds": 0, "hysteresis": 0, "no_data_seconds": 0, "severity": "info"} | fields  # fmt: skip
    response = client.post("/alerts/rules/", data)
    return response.status_code, response.content.decode()


async def test_webhooks_cannot_be_pointed_inside_the_hubs_network(make_device, settings):
    """Finding 7: an operator who is not staff cannot set a rule's webhook URL; staff cannot point one at a loopback,
    private, link-local or mapped address, nor at a name resolving to one, unless HUB_ALERT_WEBHOOK_ALLOW lists it;
    and a delivery whose URL leads inside by the time it is sent is refused then: recorded failed, never sent."""
    from django.test import Client

    from alerts.config import WebhookConfig
    from alerts.models import AlertEvent, AlertRule, WebhookDelivery
    from alerts.webhooks import webhooks_deliver_due
    from tests.webhook_receiver import WebhookReceiver

    device = await sync_to_async(make_device)()
    receiver = WebhookReceiver()

    def through_the_form() -> None:
        LatestValue.objects.create(device_id=device.id, key="t", ts=django_now(), value=1.0)
        operator, staff = Client(), Client()
        operator.force_login(person("op"))
        staff.force_login(person("boss", password="pw", role=3))
        status, page = rule_form(operator, webhook_url="https://hooks.example.com/x")
        assert status == 400 and "only admins" in page
        for inside in (receiver.url, "http://localhost:8000/", "http://10.1.2.3/", "http://169.254.169.254/latest/",
                       "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/"):  # fmt: skip
            status, page = rule_form(staff, webhook_url=inside)
            assert status == 400 and "inside the hub" in page, (inside, status)
        assert not AlertRule.objects.exists()
        settings.HUB_ALERT_WEBHOOK_ALLOW = ["127.0.0.1/32"]
        assert rule_form(staff, webhook_url=receiver.url)[0] == 302
        assert rule_form(operator)[0] == 302  # no URL: HUB_ALERT_WEBHOOK_URL

    await sync_to_async(through_the_form)()

    def queued() -> int:
        rule = AlertRule.objects.get(webhook_url=receiver.url)
        event = AlertEvent.objects.create(
            rule=rule, device_id=device.id, type="fired", at=django_now(), severity="info"
        )
        payload = {"id": event.id, "type": "fired"}
        return WebhookDelivery.objects.create(event=event, url=rule.webhook_url, payload=payload,
                                              next_attempt_at=django_now()).id  # fmt: skip

    settings.HUB_ALERT_WEBHOOK_ALLOW = []  # as if the name now led inside, or the rule predated the check
    refused = await sync_to_async(queued)()
    async with httpx.AsyncClient(timeout=5) as client:
        await webhooks_deliver_due(WebhookConfig(), client)
        settings.HUB_ALERT_WEBHOOK_ALLOW = ["127.0.0.1"]
        sent = await sync_to_async(queued)()
        await webhooks_deliver_due(WebhookConfig(), client)
    rows = await sync_to_async(lambda: dict(WebhookDelivery.objects.values_list("id", "status")))()
    error = await sync_to_async(lambda: WebhookDelivery.objects.get(id=refused).last_error)()
    assert rows == {refused: "failed", sent: "sent"} and error.startswith("refused: "), (rows, error)
    assert len(receiver.received) == 1 and receiver.received[0][0]["Host"] == receiver.url.split("/")[2]
    receiver.close()


@pytest.mark.parametrize(
    "inside",
    [
        "http://[64:ff9b::7f00:1]/",  # NAT64 (RFC 6052's well-known prefix) of 127.0.0.1
        "http://[64:ff9b:1::a00:1]/",  # NAT64, the local-use prefix, of 10.0.0.1
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254 (cloud metadata)
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
        "http://[::ffff:10.1.2.3]/",  # IPv4-mapped
        "http://[::127.0.0.1]/",  # IPv4-compatible (deprecated)
    ],
)
def test_ipv6_forms_of_an_inside_address_are_refused(inside, settings):
    """Issue 22: every IPv6 form that embeds an IPv4 address is judged by that address too."""
    settings.HUB_ALERT_WEBHOOK_ALLOW = []
    problem = webhook_url_problem(inside)
    assert problem is not None and "inside the hub's network" in problem, (inside, problem)


def test_public_ipv6_and_nat64_of_a_public_address_are_allowed(settings):
    settings.HUB_ALERT_WEBHOOK_ALLOW = []
    for public in ("http://[2606:4700:4700::1111]/", "http://[64:ff9b::808:808]/"):  # Cloudflare; NAT64 of 8.8.8.8
        assert webhook_url_problem(public) is None, public
