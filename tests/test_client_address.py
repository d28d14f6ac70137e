"""The client address the login and provisioning throttles count: the peer's own, or the one a trusted proxy
(HUB_TRUSTED_PROXIES) forwards; never an X-Forwarded-For a client makes up. A real uvicorn with the hub's options
(tests/conftest.py, `live_hub`); loopback addresses other than 127.0.0.1 stand for other clients."""

import re

import httpx
import pytest
from asgiref.sync import sync_to_async
from axes.models import AccessAttempt
from django.core.exceptions import ImproperlyConfigured

from hub.settings import _trusted_proxies

pytestmark = pytest.mark.usefixtures("postgres")

PROXY = "127.0.0.1"  # where a client's connections come from unless it binds another address
STRANGER = "127.0.0.2"
GUESS = {"profile": "nope", "secret": "guess", "device": "th-1"}
BUDGET = {"HUB_PROVISION_RATE_LIMIT": 0.01, "HUB_PROVISION_RATE_BURST": 3}  # 3 attempts, then 429 for minutes


def client_from(hub, address: str) -> httpx.AsyncClient:
    """An HTTP client of `hub` whose connections come from `address` (a loopback address)."""
    return httpx.AsyncClient(base_url=hub.http, transport=httpx.AsyncHTTPTransport(local_address=address))


def made_up(i: int) -> str:
    """A new address for each attempt, as a client naming itself anew would."""
    return f"10.9.{i}.1"


async def login(client: httpx.AsyncClient, username: str, password: str, *, forwarded_for: str = "") -> int:
    """Submit the login form as a browser does (CSRF cookie and token), 'forwarded for' an address if given."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    page = (await client.get("/login/", headers=headers)).text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    form = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    headers["Referer"] = f"{client.base_url}login/"
    return (await client.post("/login/", data=form, headers=headers)).status_code


async def wrong_passwords(client: httpx.AsyncClient, username: str, count: int, forwarded_for: str = "") -> list[int]:
    """The answers to `count` failed logins, each forwarded for `forwarded_for`, else for a made-up address."""
    return [await login(client, username, "wrong", forwarded_for=forwarded_for or made_up(i)) for i in range(count)]


def locked_at(limit: int, attempts: int) -> list[int]:
    """The answers to `attempts` wrong passwords of one pair: the form again, then 429 from the `limit`th on."""
    return [200] * (limit - 1) + [429] * (attempts - limit + 1)


@sync_to_async
def counted_addresses() -> set[str]:
    """The addresses django-axes counts failed logins against."""
    return set(AccessAttempt.objects.values_list("ip_address", flat=True))


async def provision_answers(client: httpx.AsyncClient, count: int, forwarded_for: str = "") -> list[int]:
    """The statuses of `count` provisioning guesses, forwarded for `forwarded_for`, else for a made-up address."""
    return [
        (
            await client.post("/api/v1/provision", json=GUESS, headers={"X-Forwarded-For": forwarded_for or made_up(i)})
        ).status_code
        for i in range(count)
    ]


@pytest.mark.hub_settings(HUB_TRUSTED_PROXIES=[])
async def test_without_a_trusted_proxy_made_up_forwarded_addresses_do_not_escape_the_login_lockout(
    live_hub, operator_user, settings, monkeypatch
):
    """12 wrong passwords, each 'forwarded for' a new address, lock the user out at the client's own address from
    HUB_LOGIN_FAILURE_LIMIT on, the right password too; from another address the same user still logs in. Whatever
    uvicorn's own FORWARDED_ALLOW_IPS says."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")  # uvicorn's default when not told: the hub always tells it
    limit, user = settings.AXES_FAILURE_LIMIT, operator_user.username
    async with client_from(live_hub, PROXY) as attacker:
        assert await wrong_passwords(attacker, user, 12) == locked_at(limit, 12)
        assert await login(attacker, user, "pw", forwarded_for=made_up(99)) == 429
    async with client_from(live_hub, STRANGER) as elsewhere:
        assert await login(elsewhere, user, "pw") == 302
    assert await counted_addresses() == {PROXY}


@pytest.mark.hub_settings(HUB_TRUSTED_PROXIES=[PROXY])
async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_login_lockout(
    live_hub, operator_user, settings
):
    """Failures forwarded for 10.0.0.1 lock out 10.0.0.1 for that user while 10.0.0.2 still logs in; a client that
    is not a trusted proxy is counted as itself, whatever it says it forwards."""
    limit, user = settings.AXES_FAILURE_LIMIT, operator_user.username
    async with client_from(live_hub, PROXY) as proxy:
        assert await wrong_passwords(proxy, user, limit, forwarded_for="10.0.0.1") == locked_at(limit, limit)
        assert await login(proxy, user, "pw", forwarded_for="10.0.0.1") == 429
        assert await login(proxy, user, "pw", forwarded_for="10.0.0.2") == 302
    async with client_from(live_hub, STRANGER) as stranger:
        assert await wrong_passwords(stranger, user, limit) == locked_at(limit, limit)
        assert await login(stranger, user, "pw", forwarded_for="10.0.0.2") == 429
    assert await counted_addresses() == {"10.0.0.1", STRANGER}


@pytest.mark.hub_settings(HUB_TRUSTED_PROXIES=[PROXY])
async def test_only_a_trusted_proxy_sets_the_scheme(live_hub, operator_user):
    """X-Forwarded-Proto: https is believed from a trusted proxy only, as Django's CSRF check shows: a login taken
    for HTTPS needs an HTTPS Referer (403 without), one taken for plain HTTP does not (the form again)."""
    answers = {}
    for address in (PROXY, STRANGER):
        async with client_from(live_hub, address) as client:
            client.headers["X-Forwarded-Proto"] = "https"
            answers[address] = await login(client, operator_user.username, "wrong")  # Referer: http://…
    assert answers == {PROXY: 403, STRANGER: 200}


@pytest.mark.hub_settings(HUB_TRUSTED_PROXIES=[], **BUDGET)
async def test_without_a_trusted_proxy_made_up_forwarded_addresses_share_one_provisioning_budget(live_hub):
    """Provisioning guesses each 'forwarded for' a new address get 429 once the client's one burst is spent."""
    async with client_from(live_hub, PROXY) as guesser:
        assert await provision_answers(guesser, 5) == [401] * 3 + [429] * 2


@pytest.mark.hub_settings(HUB_TRUSTED_PROXIES=[PROXY], **BUDGET)
async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_provisioning_budget(live_hub):
    """Two addresses forwarded by the trusted proxy each get a burst; a client that is not a trusted proxy gets one
    for itself, whatever it says it forwards."""
    async with client_from(live_hub, PROXY) as proxy, client_from(live_hub, STRANGER) as stranger:
        answers = {
            "10.0.0.1": await provision_answers(proxy, 4, forwarded_for="10.0.0.1"),
            "10.0.0.2": await provision_answers(proxy, 4, forwarded_for="10.0.0.2"),
            STRANGER: await provision_answers(stranger, 4),
        }
    assert answers == dict.fromkeys(("10.0.0.1", "10.0.0.2", STRANGER), [401] * 3 + [429])


@pytest.mark.parametrize("bad", ["localhost", "10.0.0.1/8", "*", "127.0.0.1,10.0.0.300"])
def test_a_trusted_proxy_that_is_no_address_or_network_is_refused_by_name(bad, monkeypatch):
    """uvicorn would keep it as a name that never matches (or trust everyone, for `*`); the hub refuses to start,
    naming the entry."""
    monkeypatch.setenv("HUB_TRUSTED_PROXIES", bad)
    entry = bad.split(",")[-1]
    with pytest.raises(ImproperlyConfigured, match=rf"HUB_TRUSTED_PROXIES: .*{re.escape(entry)}"):
        _trusted_proxies()


def test_trusted_proxies_are_addresses_and_networks(monkeypatch):
    monkeypatch.setenv("HUB_TRUSTED_PROXIES", " 127.0.0.1, 10.0.0.0/8,::1,fd00::/8 ")
    assert _trusted_proxies() == ["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"]
