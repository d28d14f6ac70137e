"""The audit trail: logins recorded with their address and never a password; the log for admins only, through the
API (filtered, paged) and the admin site (read-only, even for an admin); old events pruned by the hub and by
`auditprune`."""

import io
from dataclasses import replace
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractUser, Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.http import HttpResponse
from django.test import Client
from django.utils import timezone

from accounts.audit import audit_prune, audit_record, audit_record_as
from accounts.models import Access, AuditEvent
from accounts.policy import PERMISSIONS, ROLE_GROUPS, Actor, Role
from accounts.users import user_create
from api.credentials import api_token_create
from core.epoch import epoch_ms
from devices.services import device_create
from hub.config import HubConfig
from hub.runtime import hub_runtime
from tests.api.conftest import error, token_client
from tests.inprocess import in_process_client
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("postgres", "redis")

PASSWORD = "Quiet-harbour-lantern-42"  # noqa: S105 - a test user's
ADDRESS = "203.0.113.7"


def person(name: str, role: Role, *, password: str | None = None) -> AbstractUser:
    """A user with `role`; the role groups are made again first (a transactional test's flush drops them)."""
    access = ContentType.objects.get_for_model(Access)
    names = dict(Access._meta.permissions)
    for held, group_name in ROLE_GROUPS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        codenames = PERMISSIONS[held]
        group.permissions.set(
            Permission.objects.get_or_create(content_type=access, codename=c, defaults={"name": names[c]})[0]
            for c in codenames
        )
    return user_create(name, password=password, role=role)


def row_text(event: AuditEvent) -> str:
    """Every column of the event's row, as stored."""
    return str(AuditEvent.objects.filter(pk=event.pk).values().get())


def aged(event: AuditEvent, **ago: float) -> AuditEvent:
    """The event moved into the past (`at` is set on insert)."""
    AuditEvent.objects.filter(pk=event.pk).update(at=timezone.now() - timedelta(**ago))
    return AuditEvent.objects.get(pk=event.pk)


# Logins -----------------------------------------------------------------------------------------------------


def test_a_login_is_recorded_with_its_address_and_never_the_password(db):
    """Logging in through the login page records who, from where; the row holds no trace of the password."""
    ann = person("ann", Role.ADMIN, password=PASSWORD)
    response = Client(REMOTE_ADDR=ADDRESS).post("/login/", {"username": "ann", "password": PASSWORD})
    assert response.status_code == 302, response.content
    event = AuditEvent.objects.get(action="login")
    assert (event.actor_kind, event.actor, event.user_id, event.address) == ("user", "ann", ann.pk, ADDRESS)
    assert PASSWORD not in row_text(event)


def test_a_failed_login_is_recorded_with_the_name_tried_and_never_the_password(db):
    """A wrong password records the name tried and the address; neither the wrong nor the right password is kept."""
    person("ann", Role.ADMIN, password=PASSWORD)
    wrong = f"not-{PASSWORD}"
    response = Client(REMOTE_ADDR=ADDRESS).post("/login/", {"username": "ann", "password": wrong})
    assert response.status_code == 200  # the form again, with its error
    event = AuditEvent.objects.get(action="login.failed")
    assert (event.actor, event.user_id, event.address) == ("ann", None, ADDRESS)
    assert PASSWORD not in row_text(event) and wrong not in row_text(event)
    assert not AuditEvent.objects.filter(action="login").exists()


# The API ----------------------------------------------------------------------------------------------------


def trail_seeded() -> tuple[list[int], dict[str, int]]:
    """Four events an hour apart, newest first: bob changes a rule, device th-2 provisions itself, ann's token
    deletes th-1, ann logs in. Also the instants between them (ms) to filter on."""
    ann = person("ann-admin", Role.ADMIN)
    th1, _ = device_create(key="th-1")
    th2, _ = device_create(key="th-2")
    by_ann = Actor(role=Role.ADMIN, user_id=ann.pk, name="ann-admin", address="198.51.100.1")
    events = [
        aged(audit_record(by_ann, "login"), hours=4),
        aged(audit_record(replace(by_ann, token_id=7), "device.delete", th1, name="Boiler"), hours=3),
        aged(audit_record_as("device", "th-2", "device.provision", th2, profile="north"), hours=2),
        aged(audit_record(Actor(role=Role.OPERATOR, name="bob"), "rule.change", None, threshold=30), hours=1),
    ]
    now = timezone.now()
    between = {"3.5h": epoch_ms(now - timedelta(hours=3.5)), "1.5h": epoch_ms(now - timedelta(hours=1.5))}
    return [e.id for e in reversed(events)], between


async def api_token_of(name: str, role: Role, scope: str = "write") -> str:
    """The plaintext of an API token (read-write by default) of a new user with `role`."""
    user = await sync_to_async(person)(name, role)
    return await sync_to_async(api_token_create)(user=user, name=name, scope=scope)


async def test_an_admin_reads_the_trail_newest_first_filtered_and_paged(runtime):
    """Each filter narrows the answer: actor, action exact or by prefix, object, [start, end); pages as every list."""
    (rule, provision, delete, login), between = await sync_to_async(trail_seeded)()
    async with token_client(runtime, await api_token_of("root", Role.ADMIN)) as admin:

        async def ids(query: str = "") -> list[int]:
            response = await admin.get(f"/api/v1/audit{query}")
            assert response.status_code == 200, response.text
            return [event["id"] for event in response.json()["results"]]

        assert await ids() == [rule, provision, delete, login]
        assert await ids("?actor=ann-admin") == [delete, login]
        assert await ids("?actor=th-2") == [provision]
        assert await ids("?action=device.delete") == [delete]
        assert await ids("?action=device.") == [provision, delete]
        assert await ids("?action=device") == []  # exact unless it ends in "."
        assert await ids("?object_type=device") == [provision, delete]
        assert await ids("?object_type=device&object_id=th-1") == [delete]
        assert await ids(f"?start={between['3.5h']}&end={between['1.5h']}") == [provision, delete]
        assert await ids(f"?end={between['3.5h']}") == [login]

        page = (await admin.get("/api/v1/audit?page_size=2&page=2")).json()
        assert page["count"] == 4 and [e["id"] for e in page["results"]] == [delete, login]
        deleted = next(e for e in (await admin.get("/api/v1/audit")).json()["results"] if e["id"] == delete)
        assert deleted == {
            "id": delete,
            "at": deleted["at"],
            "actor_kind": "token",
            "actor": "ann-admin",
            "token_id": 7,
            "action": "device.delete",
            "object_type": "device",
            "object_id": "th-1",
            "address": "198.51.100.1",
            "detail": {"name": "Boiler"},
        }
        assert abs(deleted["at"] - epoch_ms(timezone.now() - timedelta(hours=3))) < 60_000


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("start=soon", "start"), ("start=5&end=5", "start"), ("end=-1", "end"), (f"actor={'x' * 151}", "actor")],
)
async def test_a_bad_filter_is_refused_naming_it(runtime, query, parameter):
    async with token_client(runtime, await api_token_of("root", Role.ADMIN)) as admin:
        refused = error(await admin.get(f"/api/v1/audit?{query}"), 400)
    assert refused["code"] == "invalid_parameter" and refused["parameter"] == parameter, refused


@pytest.mark.parametrize(
    ("role", "scope"),
    [(Role.OPERATOR, "write"), (Role.VIEWER, "read"), (Role.ADMIN, "read")],
    ids=["operator", "viewer", "admin-read-only-token"],
)
async def test_the_trail_is_for_admins_only(runtime, role, scope):
    """An operator, a viewer, and an admin's read-only token (which acts as a viewer) are refused; nobody is 401."""
    await sync_to_async(trail_seeded)()
    async with token_client(runtime, await api_token_of("someone", role, scope)) as client:
        assert "results" not in error(await client.get("/api/v1/audit"), 403)
    async with in_process_client(runtime) as anonymous:
        error(await anonymous.get("/api/v1/audit"), 401)


# The admin site ---------------------------------------------------------------------------------------------


def admin_client(role: Role) -> Client:
    """A logged-in browser of someone with `role` (not staff: the hub's admin site lets the role decide)."""
    client = Client()
    client.force_login(person(f"user-{role.label}", role))
    return client


def refused(response: HttpResponse) -> bool:
    """403, or sent to the admin's login (someone the admin site does not let in at all)."""
    return response.status_code == 403 or (
        response.status_code == 302 and response["Location"].startswith("/admin/login/")
    )


def test_the_admin_page_lists_the_trail_for_admins_only(db):
    audit_record_as("system", "hub", "hub.check")
    page = admin_client(Role.ADMIN).get("/admin/accounts/auditevent/")
    assert page.status_code == 200 and b"hub.check" in page.content
    assert refused(admin_client(Role.OPERATOR).get("/admin/accounts/auditevent/"))
    assert refused(admin_client(Role.VIEWER).get("/admin/accounts/auditevent/"))


def test_not_even_an_admin_adds_changes_or_deletes_an_event(db):
    event = audit_record_as("system", "hub", "hub.check")
    admin = admin_client(Role.ADMIN)
    change = f"/admin/accounts/auditevent/{event.pk}/change/"
    assert admin.get(change).status_code == 200  # shown read-only
    assert admin.get("/admin/accounts/auditevent/add/").status_code == 403
    assert admin.post(change, {"action": "nothing.happened"}).status_code == 403
    assert admin.post(f"/admin/accounts/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [event.pk]}
    admin.post("/admin/accounts/auditevent/", bulk)  # no such action is offered
    assert AuditEvent.objects.get(pk=event.pk).action == "hub.check"


# Retention --------------------------------------------------------------------------------------------------


def two_events() -> tuple[int, int]:
    """An event 40 days old and one 10 days old."""
    old = aged(audit_record_as("system", "hub", "hub.check"), days=40)
    recent = aged(audit_record_as("system", "hub", "hub.check"), days=10)
    return old.pk, recent.pk


def remaining() -> list[int]:
    return sorted(AuditEvent.objects.values_list("pk", flat=True))


def test_pruning_drops_only_events_past_the_retention(db):
    old, recent = two_events()
    assert audit_prune(days=30) == 1
    assert remaining() == [recent]


def test_auditprune_applies_the_setting_or_days_given(db, settings):
    old, recent = two_events()
    out = io.StringIO()
    call_command("auditprune", "--days", "0", stdout=out)
    assert remaining() == [old, recent] and "kept forever" in out.getvalue()
    settings.HUB_AUDIT_RETENTION_DAYS = 30
    call_command("auditprune", stdout=out)
    assert remaining() == [recent] and "deleted 1 audit events older than 30 days" in out.getvalue()


async def test_the_hub_prunes_the_trail_each_retention_interval(transactional_db):
    """A hub process that runs the maintenance loops prunes the trail by itself."""
    old, recent = await sync_to_async(two_events)()
    config = HubConfig.from_settings()
    config = replace(config, audit_retention_days=30, retention=replace(config.retention, interval_seconds=0.05))

    async def pruned() -> bool:
        return await sync_to_async(remaining)() == [recent]

    async with hub_runtime(config):
        await eventually(pruned, what="the event past 30 days pruned")
