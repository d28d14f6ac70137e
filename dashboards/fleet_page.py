"""The fleet page (`/`) and its refresh (`/fleet.json`): one page of rows, server-rendered first, then live
(dashboards/static/dashboards/fleet.js). The URL holds the choices: `q` (key or name text), `label`
(`name=value`, comma-separated pairs all match), `attr` (`name=value`: an attribute of any scope), `status`, `sort`
(`-` first: reversed) and `page`."""

from collections.abc import Mapping
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse

from accounts.policy import Action
from accounts.requests import actor_in, allowed
from control.attributes import AttributesRefused, keys_checked
from core.protocol import close_codes
from dashboards.selectors import FLEET_SORTS, FLEET_STATUSES, FleetQuery, fleet_status
from devices.labels import labels_from_query, labels_text

SORT_TITLES = {"name": "Device", "status": "Status", "seen": "Last seen", "rate": "Readings/min"}
ATTRIBUTE_VALUE_MAX = 200  # characters of an attribute filter's value: it is parsed as JSON, so bounded


def attribute_from_query(text: str) -> tuple[tuple[str, str] | None, str]:
    """A page's attribute filter (`firmware=1.2.0`): the name and the value's text, or none and what was wrong."""
    if not text.strip():
        return None, ""
    name, equals, value = text.partition("=")
    name = name.strip()
    if not equals or not name:
        return None, "attribute filter ignored: write name=value, e.g. firmware=1.2.0"
    try:
        keys_checked([name])
    except AttributesRefused as refused:
        return None, f"attribute filter ignored: {refused.message}"
    value = value.strip()
    if len(value) > ATTRIBUTE_VALUE_MAX:
        return None, f"attribute filter ignored: a value of at most {ATTRIBUTE_VALUE_MAX} characters"
    return (name, value), ""


def fleet_query(params: Mapping[str, str]) -> tuple[FleetQuery, str]:
    """The page's choices from its URL (anything invalid falls back to the default), and what was wrong."""
    labels, label_problem = labels_from_query(params.get("label", ""))
    attribute, attribute_problem = attribute_from_query(params.get("attr", ""))
    problem = "; ".join(p for p in (label_problem, attribute_problem) if p)
    sort = params.get("sort", "status")
    descending = sort.startswith("-")
    sort = sort.lstrip("-")
    if sort not in FLEET_SORTS:
        sort, descending = "status", False
    status = params.get("status", "")
    try:
        page = max(1, int(params.get("page", "1")))
    except ValueError:
        page = 1
    query = FleetQuery(
        text=params.get("q", "").strip()[:200],
        labels=labels,
        attribute=attribute,
        status=status if status in FLEET_STATUSES else "",
        sort=sort,
        descending=descending,
        page=page,
    )
    return query, problem


def attribute_text(attribute: tuple[str, str] | None) -> str:
    """The inverse of `attribute_from_query`."""
    return f"{attribute[0]}={attribute[1]}" if attribute else ""


def _url(query: FleetQuery, **changes: object) -> str:
    """The page's URL for `query` with some choices changed."""
    values = {
        "q": query.text,
        "label": labels_text(query.labels),
        "attr": attribute_text(query.attribute),
        "status": query.status,
        "sort": ("-" if query.descending else "") + query.sort,
        "page": query.page,
    }
    values.update(changes)
    kept = {
        k: v for k, v in values.items() if v and not (k == "sort" and v == "status") and not (k == "page" and v == 1)
    }
    return "?" + urlencode(kept) if kept else "?"


def _columns(query: FleetQuery) -> list[dict]:
    columns = []
    for sort, title in SORT_TITLES.items():
        current = query.sort == sort
        flip = "" if current and query.descending else "-"
        columns.append(
            {
                "title": title,
                "url": _url(query, sort=(flip if current else "") + sort, page=1),
                "sorted": ("descending" if query.descending else "ascending") if current else "",
                "wide": sort == "rate",
            }
        )
    return columns


def ago(ms: int | None, now: int) -> str:
    """ "12 s ago", "3 min ago", … as fleet.js writes it (it takes over once the page runs)."""
    if ms is None:
        return "never"
    s = max(0, round((now - ms) / 1000))
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def value_text(value: object) -> str:
    """A latest value as fleet.js shows it: numbers to 3 decimals at most, text as it is."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"{round(value, 3):g}" if abs(value) < 1e15 else str(value)
    return str(value)


def _rows(snapshot: dict) -> list[dict]:
    return [
        {
            **d,
            "ago": ago(d["seen"], snapshot["now"]),
            "values": [(name, value_text(entry[2])) for name, entry in d["latest"].items()],
            "label_list": [f"{k}={v}" for k, v in sorted(d["labels"].items())],
        }
        for d in snapshot["devices"]
    ]


@allowed(Action.VIEW)
def fleet(request: HttpRequest) -> HttpResponse:
    """The first page of matching devices (of those the viewer sees), rendered into the HTML; fleet.js makes
    it live."""
    query, problem = fleet_query(request.GET)
    snapshot = fleet_status(query, fleet=actor_in(request).devices())
    page = snapshot["page"]
    context = {
        "fleet": snapshot,
        "rows": _rows(snapshot),
        "query": query,
        "label_text": labels_text(query.labels),
        "attribute_text": attribute_text(query.attribute),
        "problem": problem,
        "columns": _columns(query),
        "statuses": [(s, snapshot["counts"][s], _url(query, status=s, page=1)) for s in FLEET_STATUSES],
        "all_url": _url(query, status="", page=1),
        "previous_url": _url(query, page=page - 1) if page > 1 else "",
        "next_url": _url(query, page=page + 1) if page < snapshot["pages"] else "",
        "config": {
            "json": reverse("dashboards:fleet-json"),
            "device": reverse("dashboards:device", args=["KEY"]),
            "query": _url(query, page=page)[1:],
        },
        "close_codes": close_codes(),
    }
    return render(request, "dashboards/fleet.html", context)


@allowed(Action.VIEW)
def fleet_json(request: HttpRequest) -> JsonResponse:
    """The fleet page's periodic refresh: the same page of the same query (statuses, rates, alerts, counts)."""
    return JsonResponse(fleet_status(fleet_query(request.GET)[0], fleet=actor_in(request).devices()))
