"""The fleet page (`/`) and its refresh (`/fleet.json`): one page of rows, server-rendered first, then live
(dashboards/static/dashboards/fleet.js). The URL holds the choices: `q` (key or name text), `label`
(`name=value`, comma-separated pairs all match), `status`, `sort` (`-` first: reversed) and `page`."""

from collections.abc import Mapping
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse

from accounts.policy import Action
from accounts.requests import actor_in, allowed
from core.protocol import close_codes
from dashboards.selectors import FLEET_SORTS, FLEET_STATUSES, FleetQuery, fleet_status
from devices.labels import labels_from_query, labels_text

SORT_TITLES = {"name": "Device", "status": "Status", "seen": "Last seen", "rate": "Readings/min"}


def fleet_query(params: Mapping[str, str]) -> tuple[FleetQuery, str]:
    """The page's choices from its URL (anything invalid falls back to the default), and what was wrong."""
    labels, problem = labels_from_query(params.get("label", ""))
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
        status=status if status in FLEET_STATUSES else "",
        sort=sort,
        descending=descending,
        page=page,
    )
    return query, problem


def _url(query: FleetQuery, **changes: object) -> str:
    """The page's URL for `query` with some choices changed."""
    values = {
        "q": query.text,
        "label": labels_text(query.labels),
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
