"""People of the hub: `createoperator` from the shell, `/api/v1/users` for admins only. A person gets a role and a
label scope; a hub never loses its last active admin; every change is audited; a password is never shown."""

import importlib
import io
from collections.abc import Iterable

import pytest
from asgiref.sync import sync_to_async
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from accounts.models import AuditEvent
from accounts.policy import Role, role_of, scope_of_user
from accounts.scopes import scope_text
from accounts.users import user_create
from api.credentials import api_token_create
from tests.api.conftest import error, token_client
from tests.inprocess import in_process_client

pytestmark = pytest.mark.usefixtures("postgres", "redis")

PASSWORD = "Quiet-harbour-lantern-42"  # noqa: S105 - a test user's
OTHER_PASSWORD = "Amber-meadow-kestrel-17"  # noqa: S105 - a test user's


# Django's four (its project template's): the hub's password rules.
VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]


@pytest.fixture
def validators(settings) -> None:
    """Django's password validators (the weak-password refusals need them)."""
    settings.AUTH_PASSWORD_VALIDATORS = VALIDATORS


@pytest.fixture
def roles(db) -> None:
    """The role groups, made by the data migration's own function: a transactional test's flush drops them."""
    importlib.import_module("accounts.migrations.0002_roles").roles_create(apps, None)


def person(name: str, role: Role, *, scope: Iterable[str] = (), password: str | None = None) -> User:
    return user_create(name, password=password, role=role, scope=scope)


def fresh(name: str) -> User:
    return get_user_model().objects.get(username=name)


async def client_of(runtime, name: str, role: Role, *, scope: str = "write"):
    """An API client with a token of a new person `name` with `role`."""
    user = await sync_to_async(person)(name, role)
    return token_client(runtime, await sync_to_async(api_token_create)(user=user, name=name, scope=scope))


# The command ------------------------------------------------------------------------------------------------


def createoperator(*args: str) -> str:
    out = io.StringIO()
    call_command("createoperator", *args, stdout=out)
    return out.getvalue()


def test_createoperator_makes_a_scoped_operator_with_the_password_from_the_environment(roles, monkeypatch):
    """The password is read from the named variable, checked, never printed; the role and scope are."""
    monkeypatch.setenv("ANN_PASSWORD", PASSWORD)
    out = createoperator("ann", "--role", "operator", "--scope", "site=north", "--password-env", "ANN_PASSWORD")
    assert out.startswith("created ann: role operator, scope site=north") and PASSWORD not in out
    ann = fresh("ann")
    assert ann.check_password(PASSWORD) and role_of(ann) == Role.OPERATOR
    assert scope_text(scope_of_user(ann)) == ["site=north"]


def test_createoperator_without_a_password_makes_a_token_only_person(roles):
    out = createoperator("wall", "--role", "viewer", "--no-password")
    assert "role viewer, scope every device" in out and "createapitoken wall" in out
    assert not fresh("wall").has_usable_password()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ops", "--role", "viewer", "--no-password"], "a user 'ops' exists"),
        (["bea", "--role", "root", "--no-password"], "--role: one of viewer, operator, admin"),
        (["bea", "--role", "viewer", "--scope", "site", "--no-password"], "--scope 'site': 'site' is not name=value"),
        (["bea", "--role", "admin", "--scope", "site=north", "--no-password"], "an admin is never scoped"),
        (["bea", "--role", "viewer", "--password-env", "NO_SUCH_VARIABLE"], "NO_SUCH_VARIABLE is not set"),
        (["bea", "--role", "viewer", "--password-env", "WEAK"], "password: This password is too common"),
        (["bad name!", "--role", "viewer", "--no-password"], "username: Enter a valid username"),
        (["bea", "--no-password"], "--role: one of"),
    ],
    ids=["taken", "role", "selector", "admin-scope", "no-variable", "weak", "username", "no-role"],
)
def test_createoperator_refuses_with_a_clear_message(roles, validators, monkeypatch, args, message):
    """Nothing is made when any part is refused."""
    monkeypatch.setenv("WEAK", "password")
    person("ops", Role.OPERATOR)
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        createoperator(*args)
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["ops"]


def test_createoperator_update_changes_the_role_scope_and_password(roles, monkeypatch):
    """--update replaces the role and the scope (--unscoped: every device); a superuser demoted is no admin."""
    person("ann", Role.VIEWER, scope=["site=north"])
    out = createoperator("ann", "--update", "--role", "operator", "--scope", "site=south", "--scope", "site=east")
    assert out.startswith("changed ann: role operator, scope site=east, site=south")
    monkeypatch.setenv("ANN_PASSWORD", PASSWORD)
    createoperator("ann", "--update", "--unscoped", "--password-env", "ANN_PASSWORD")
    ann = fresh("ann")
    assert role_of(ann) == Role.OPERATOR and scope_of_user(ann) == () and ann.check_password(PASSWORD)

    get_user_model().objects.create_superuser("root", password=PASSWORD)
    assert "role viewer" in createoperator("root", "--update", "--role", "viewer")
    assert role_of(fresh("root")) == Role.VIEWER
    with pytest.raises(CommandError, match="no user 'nobody'"):
        createoperator("nobody", "--update", "--role", "viewer")


# The API ----------------------------------------------------------------------------------------------------


async def test_an_admin_creates_lists_changes_and_deletes_people_each_audited(runtime, roles):
    """The answer never holds the password; every change leaves a row naming the admin, their token and what."""
    async with await client_of(runtime, "root", Role.ADMIN) as admin:
        body = {"username": "bea", "password": PASSWORD, "role": "viewer", "scope": ["site=north"], "email": "b@x.io"}
        created = await admin.post("/api/v1/users", json=body)
        assert created.status_code == 201, created.text
        bea = created.json()
        assert PASSWORD not in created.text and "password" not in bea
        assert (bea["username"], bea["role"], bea["scope"], bea["active"]) == ("bea", "viewer", ["site=north"], True)
        assert await sync_to_async(lambda: fresh("bea").check_password(PASSWORD))()

        listed = (await admin.get("/api/v1/users?page_size=1")).json()
        assert listed["count"] == 2 and [u["username"] for u in listed["results"]] == ["bea"]
        assert (await admin.get(f"/api/v1/users/{bea['id']}")).json() == bea

        change = {"role": "operator", "scope": [], "password": OTHER_PASSWORD, "email": ""}
        changed = await admin.patch(f"/api/v1/users/{bea['id']}", json=change)
        assert changed.status_code == 200, changed.text
        assert OTHER_PASSWORD not in changed.text
        assert (changed.json()["role"], changed.json()["scope"], changed.json()["email"]) == ("operator", [], "")
        assert await sync_to_async(lambda: fresh("bea").check_password(OTHER_PASSWORD))()
        deactivated = await admin.patch(f"/api/v1/users/{bea['id']}", json={"active": False})
        assert deactivated.status_code == 200 and deactivated.json()["active"] is False, deactivated.text

        assert (await admin.delete(f"/api/v1/users/{bea['id']}")).status_code == 204
        assert error(await admin.get(f"/api/v1/users/{bea['id']}"), 404)["code"] == "unknown_user"
        assert error(await admin.delete(f"/api/v1/users/{bea['id']}"), 404)["code"] == "unknown_user"

    root = await sync_to_async(fresh)("root")
    events = [e async for e in AuditEvent.objects.filter(action__startswith="user.").order_by("id")]
    assert [e.action for e in events] == ["user.create", "user.change", "user.change", "user.delete"]
    assert {(e.actor_kind, e.actor, e.user_id, e.object_id) for e in events} == {
        ("token", "root", root.pk, str(bea["id"]))
    }
    assert events[0].detail == {"username": "bea", "role": "viewer", "scope": ["site=north"], "active": True}
    assert events[1].detail == {
        "username": "bea",
        "role": "operator",
        "scope": [],
        "active": True,
        "changed": ["email", "password", "role", "scope"],  # names only
    }
    assert (events[2].detail["changed"], events[2].detail["active"]) == (["active"], False)
    assert all(PASSWORD not in str(e.detail) and OTHER_PASSWORD not in str(e.detail) for e in events)


@pytest.mark.parametrize(("role", "scope"), [(Role.VIEWER, "write"), (Role.OPERATOR, "write"), (Role.ADMIN, "read")])
async def test_only_an_admin_with_a_session_or_a_read_write_token_manages_people(runtime, roles, role, scope):
    """A viewer and an operator are refused every method; an admin's read-only token every write (it acts as a
    viewer); nobody is 401. Nothing changes."""
    bea = await sync_to_async(person)("bea", Role.VIEWER)
    calls = [
        ("POST", "/api/v1/users", {"username": "eve", "role": "admin"}),
        ("PATCH", f"/api/v1/users/{bea.pk}", {"role": "admin"}),
        ("DELETE", f"/api/v1/users/{bea.pk}", None),
    ]
    if role < Role.ADMIN:
        calls += [("GET", "/api/v1/users", None), ("GET", f"/api/v1/users/{bea.pk}", None)]
    async with await client_of(runtime, "someone", role, scope=scope) as client:
        for method, path, body in calls:
            refused = error(await client.request(method, path, json=body), 403)
            assert refused["code"] == ("insufficient_scope" if role == Role.ADMIN else "forbidden"), refused
    async with in_process_client(runtime) as anonymous:
        error(await anonymous.get("/api/v1/users"), 401)
    assert await get_user_model().objects.filter(username="eve").aexists() is False
    assert await sync_to_async(lambda: role_of(fresh("bea")))() == Role.VIEWER
    assert await AuditEvent.objects.filter(action__startswith="user.").aexists() is False


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"username": "bea", "role": "viewer", "scope": ["site"]}, "scope", 400),
        ({"username": "bea", "role": "viewer", "scope": ["site="]}, "scope", 400),
        ({"username": "bea", "role": "viewer", "scope": [""]}, "scope", 400),
        ({"username": "bea", "role": "viewer", "scope": [7]}, "scope", 400),
        ({"username": "bea", "role": "viewer", "scope": "site=north"}, "scope", 400),
        ({"username": "bea", "role": "admin", "scope": ["site=north"]}, "scope", 400),
        ({"username": "bea", "role": "root"}, "role", 400),
        ({"username": "bea"}, "role", 400),
        ({"username": "bea", "role": "viewer", "password": "password"}, "password", 400),
        ({"username": "bad name!", "role": "viewer"}, "username", 400),
        ({"username": "bea", "role": "viewer", "email": "not-an-address"}, "email", 400),
        ({"username": "bea", "role": "viewer", "is_superuser": True}, "is_superuser", 400),
        ({"username": "root", "role": "viewer"}, "username", 409),
    ],
)
async def test_a_refused_person_is_named_by_field_and_nothing_is_made(runtime, roles, validators, body, field, status):
    async with await client_of(runtime, "root", Role.ADMIN) as admin:
        refused = error(await admin.post("/api/v1/users", json=body), status)
        assert refused["field"] == field and refused["message"].startswith(f"{field}: "), refused
    assert await get_user_model().objects.filter(username="bea").aexists() is False


async def test_a_change_is_checked_before_anything_is_changed(runtime, roles, validators):
    """A bad scope, or an admin's scope, refuses the whole PATCH: the role asked beside it is not given either."""
    bea = await sync_to_async(person)("bea", Role.VIEWER, scope=["site=north"])
    async with await client_of(runtime, "root", Role.ADMIN) as admin:
        for body in ({"role": "operator", "scope": ["north"]}, {"role": "admin", "scope": ["site=north"]}):
            assert error(await admin.patch(f"/api/v1/users/{bea.pk}", json=body), 400)["field"] == "scope"
        assert error(await admin.patch(f"/api/v1/users/{bea.pk}", json={"password": "123"}), 400)["field"] == "password"
        assert error(await admin.patch(f"/api/v1/users/{bea.pk}", json={"active": "no"}), 400)["field"] == "active"
        assert error(await admin.patch("/api/v1/users/999999", json={"role": "viewer"}), 404)["code"] == "unknown_user"
        unchanged = (await admin.get(f"/api/v1/users/{bea.pk}")).json()
    assert (unchanged["role"], unchanged["scope"]) == ("viewer", ["site=north"])


async def test_the_hub_keeps_its_last_admin_and_an_admin_keeps_their_own_role(runtime, roles):
    """The last active admin cannot be demoted, deactivated or deleted (409); with another admin, an admin still
    cannot do it to themselves (400), but may to the other; a superuser demoted is no longer an admin."""
    async with await client_of(runtime, "root", Role.ADMIN) as root:
        me = (await root.get("/api/v1/users")).json()["results"][0]["id"]
        for method, body in (("PATCH", {"role": "operator"}), ("PATCH", {"active": False}), ("DELETE", None)):
            refused = error(await root.request(method, f"/api/v1/users/{me}", json=body), 409)
            assert refused["code"] == "last_admin" and "last active admin" in refused["message"], refused

        ada = await sync_to_async(get_user_model().objects.create_superuser)("ada", password=PASSWORD)
        for method, body, field in (
            ("PATCH", {"role": "viewer"}, "role"),
            ("PATCH", {"active": False}, "active"),
            ("DELETE", None, None),
        ):
            refused = error(await root.request(method, f"/api/v1/users/{me}", json=body), 400)
            assert refused["code"] == "own_account" and refused.get("field") == field, refused
            assert "yourself" in refused["message"]
        assert (await root.patch(f"/api/v1/users/{me}", json={"email": "root@x.io"})).status_code == 200

        demoted = await root.patch(f"/api/v1/users/{ada.pk}", json={"role": "operator"})
        assert demoted.status_code == 200 and demoted.json()["role"] == "operator", demoted.text
        assert error(await root.patch(f"/api/v1/users/{me}", json={"role": "viewer"}), 409)["code"] == "last_admin"
    assert await sync_to_async(lambda: role_of(fresh("root")))() == Role.ADMIN
