"""Talking back to devices from the pages (issue 24): the device page lists the three scopes of attributes with who
changed them and when, and the device's recent commands; operators also get the forms that set and delete
attributes and send commands (viewers do not); the fleet page filters by an attribute. In Chromium, an operator
sets a shared attribute and queues a persistent command by keyboard, and the commands table shows it queued."""

from html.parser import HTMLParser

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from control.attributes import attributes_listed, attributes_set
from control.commands import CommandAsk, command_create
from control.models import Attribute, Command
from dashboards.fleet_page import fleet_query
from dashboards.selectors import FleetQuery, fleet_status
from devices.services import device_create
from tests.browser_pages import OPERATOR, log_in
from tests.conftest import person
from tests.test_demo import UNLABELLED, inline_code

LONG = {"schedule": [{"from": f"{h:02d}:00", "to": f"{h:02d}:59", "target": 20 + h % 3} for h in range(6)]}


class Tables(HTMLParser):
    """The text of every cell of every table with an id, row by row (what a person reads, markup left out)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and (name := dict(attrs).get("id")):
            self._table = name
            self.tables[name] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def device_with_control():
    """A device with attributes in every scope (one long, one with markup) and a queued persistent command."""
    device, _ = device_create(key="boiler-1", labels={"site": "north"})
    attributes_set(device_id=device.id, scope="client", values={"firmware": "1.2.0", "config": LONG}, by="device")
    attributes_set(device_id=device.id, scope="shared", values={"target": 21.5}, by="alice")
    attributes_set(device_id=device.id, scope="server", values={"note": "<b>basement</b>"}, by="bob")
    ask = CommandAsk(method="reboot", params={"delay": 5}, persistent=True)
    command = command_create(device_id=device.id, ask=ask, by="alice")
    return device, command


def page_of(role: int, name: str) -> tuple[str, dict]:
    client = Client()
    client.force_login(person(name, role=role))
    response = client.get("/devices/boiler-1/")
    assert response.status_code == 200
    return response.content.decode(), response.context


def test_the_device_page_lists_attributes_by_scope_with_who_and_when_and_the_recent_commands(transactional_db):
    """Server-rendered (no script needed): key, JSON value (long ones shortened, the whole a click away), the time
    in UTC (named; the script turns it into local time) and who; the commands newest first with their state."""
    device, command = device_with_control()
    html, context = page_of(2, "op")
    assert context["attributes"] == attributes_listed(device.id)
    tables = Tables(html).tables
    client_rows = {row[0]: row for row in tables["attributes-client"][1:]}
    key, value, updated, by = client_rows["firmware"]
    assert (value, by) == ('"1.2.0"', "device")
    assert updated.endswith(" UTC"), "named: the script shows it in local time"
    assert client_rows["config"][1].startswith('{"schedule":[{')  # jsonb keeps its own key order
    assert "…" in client_rows["config"][1] and '"to": "05:59"' in client_rows["config"][1], "shortened, the whole"
    assert [row[:2] + row[3:4] for row in tables["attributes-shared"][1:]] == [["target", "21.5", "alice"]]
    assert [row[:2] + row[3:4] for row in tables["attributes-server"][1:]] == [["note", '"<b>basement</b>"', "bob"]]
    assert "&lt;b&gt;basement" in html, "attribute values are text, never markup"
    assert tables["command-list"][1][:3] == [f"#{command.id}", "reboot", "queued"]
    assert inline_code(html) == [], "no inline script or style (the pages' Content-Security-Policy)"


def test_operators_get_the_forms_and_delete_buttons_and_viewers_only_the_tables(transactional_db):
    """Operators may change attributes (shared and server: a delete button per row) and send commands; a viewer
    sees the same tables without a form or a button. Every control has a label."""
    device_with_control()
    operator, _ = page_of(2, "op")
    viewer, _ = page_of(1, "watcher")
    for form in ('id="attribute-form"', 'id="command-form"', 'name="csrfmiddlewaretoken"'):
        assert form in operator
        assert form not in viewer.split("<main", 1)[1], form  # the header's log-out form has a token of its own
    assert operator.count('class="attribute-delete"') == 2, "shared and server rows, not the device's own"
    assert 'aria-label="Delete shared attribute target"' in operator
    assert "attribute-delete" not in viewer
    for html in (operator, viewer):
        assert all(f'id="{table}"' in html for table in ("attributes-client", "attributes-shared", "command-list"))
    assert '<label><input name="two_way" type="checkbox" checked>' in operator, "two-way by default"
    assert 'name="timeout" type="number" required min="100"' in operator and 'value="10000"' in operator


def fleet_with_attributes():
    """Six devices: firmware 1.2.0 (client) and 1.3.0, rev 5 (shared, a number) and "5" (server, text), rev 6,
    and one with none."""
    keys = ["fw-old", "fw-new", "rev-number", "rev-text", "rev-six", "bare"]
    ids = {key: device_create(key=key)[0].id for key in keys}
    values = [
        ("fw-old", "client", {"firmware": "1.2.0", "enabled": True}),
        ("fw-new", "client", {"firmware": "1.3.0", "enabled": False}),
        ("rev-number", "shared", {"rev": 5}),
        ("rev-text", "server", {"rev": "5"}),
        ("rev-six", "shared", {"rev": 6, "firmware": "1.2.0x"}),
    ]
    for key, scope, attrs in values:
        attributes_set(device_id=ids[key], scope=scope, values=attrs, by="test")
    return ids


def test_the_fleet_filters_by_an_attribute_of_any_scope_compared_as_text(transactional_db):
    """`attr=name=value` keeps the devices with that attribute (client, shared or server) reading so: a JSON string
    by its text, numbers and booleans by their JSON text; counts are over the filtered fleet; the query costs no
    more queries than the unfiltered one; a malformed filter is ignored and said so."""
    fleet_with_attributes()

    def keys(text: str) -> list[str]:
        query, problem = fleet_query({"attr": text, "sort": "name"})
        assert problem == ""
        return [d["key"] for d in fleet_status(query)["devices"]]

    assert keys("firmware=1.2.0") == ["fw-old"]
    assert keys("firmware=1.3.0") == ["fw-new"]
    assert keys("rev=5") == ["rev-number", "rev-text"], "the number 5 and the text 5"
    assert keys('rev="5"') == ["rev-text"]
    assert keys("rev=6") == ["rev-six"]
    assert keys("enabled=true") == ["fw-old"]
    assert keys("enabled = false") == ["fw-new"]
    assert keys("firmware=2.0") == []
    assert keys("rev=1e400") == keys("rev=" + "9" * 30) == keys("rev=null") == [], "JSON that is no value of theirs"
    assert keys("") == ["bare", "fw-new", "fw-old", "rev-number", "rev-six", "rev-text"]

    snapshot = fleet_status(FleetQuery(attribute=("rev", "5")))
    assert (snapshot["total"], snapshot["matched"], snapshot["counts"]["never"]) == (6, 2, 2)
    with CaptureQueriesContext(connection) as unfiltered:
        fleet_status(FleetQuery())
    with CaptureQueriesContext(connection) as filtered:
        fleet_status(FleetQuery(attribute=("firmware", "1.2.0")))
    assert len(filtered.captured_queries) == len(unfiltered.captured_queries), "a subquery, not a query per device"

    for text, problem in [("firmware", "write name=value"), ("bad key!=1", "a key is"), ("x=" + "9" * 201, "200")]:
        query, said = fleet_query({"attr": text})
        assert query.attribute is None and problem in said, (text, said)


def test_the_fleet_page_and_its_json_filter_by_attribute(transactional_db):
    """The filter form has an Attribute input; the page, its links and fleet.json keep `attr`."""
    fleet_with_attributes()
    client = Client()
    client.force_login(person("op", role=1))
    html = client.get("/", {"attr": "firmware=1.2.0"}).content.decode()
    rows = Tables(html).tables["fleet"][1:]
    assert [row[0].split()[0] for row in rows] == ["fw-old"]
    assert 'name="attr" type="search" value="firmware=1.2.0"' in html
    assert "attr=firmware%3D1.2.0" in html, "sorting and status links keep the filter"
    snapshot = client.get("/fleet.json", {"attr": "rev=5"}).json()
    assert sorted(d["key"] for d in snapshot["devices"]) == ["rev-number", "rev-text"]
    assert (snapshot["matched"], snapshot["total"], sum(snapshot["counts"].values())) == (2, 6, 2)
    assert "attribute filter ignored" in client.get("/", {"attr": "firmware"}).content.decode()


@pytest.mark.usefixtures("postgres", "redis")
async def test_an_operator_sets_a_shared_attribute_and_queues_a_command_by_keyboard(page, live_hub, operator):
    """In Chromium, through the API with the session's CSRF token: the shared table shows the new attribute (a
    plain string kept as text), a persistent command is answered at once and listed as queued; every control
    has a label and the page breaks no Content-Security-Policy rule (the `page` fixture fails on a violation)."""
    device, _ = await sync_to_async(device_create)(key="valve-7")
    await log_in(page, f"{live_hub.http}/devices/{device.key}/")
    assert await page.evaluate(UNLABELLED) == []

    await page.select_option("#attribute-form select[name=scope]", "shared")
    await page.fill("#attribute-form input[name=key]", "mode")
    await page.fill("#attribute-form input[name=value]", "eco")
    await page.press("#attribute-form input[name=value]", "Enter")
    row = page.locator("#attributes-shared tbody tr[data-key=mode]")
    await row.wait_for()
    assert await row.locator("td").nth(0).text_content() == '"eco"'
    assert await row.locator("td").nth(2).text_content() == OPERATOR
    assert await page.is_hidden("#attribute-error")

    await page.fill("#command-form input[name=method]", "open")
    await page.fill("#command-form input[name=params]", '{"percent": 40}')
    await page.focus("#command-form input[name=persistent]")
    await page.keyboard.press("Space")
    await page.keyboard.press("Tab")  # to Send
    await page.keyboard.press("Enter")
    await page.wait_for_function("() => document.getElementById('command-outcome').textContent.includes('queued')")
    await page.wait_for_function(
        "() => Array.from(document.querySelector('#command-list tbody tr').cells, (c) => c.textContent)"
        ".slice(1, 3).join() === 'open,queued'"
    )

    stored = await sync_to_async(lambda: (Attribute.objects.get(key="mode").value, Command.objects.get().persistent))()
    assert stored == ("eco", True)
