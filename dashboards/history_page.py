"""The history page (`/devices/<KEY>/history/`) and its choices: read leniently from the page's URL and
turned into the exact API parameters.

The page and its CSV link query the same API with the same parameters, so the export holds exactly what
the chart shows. Every instant here is UTC milliseconds, as in the API; the page converts to local time.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from accounts.policy import Action
from accounts.requests import actor_in, allowed
from core.epoch import MAX_MS, now_ms
from devices.models import Device
from history.selectors import HOUR_MS, MINUTE_MS, interval_auto, keys_of_device

DAY_MS = 24 * HOUR_MS
PRESETS = {"1h": HOUR_MS, "24h": DAY_MS, "7d": 7 * DAY_MS, "30d": 30 * DAY_MS}
RANGES = [("1h", "1 h"), ("24h", "24 h"), ("7d", "7 d"), ("30d", "30 d"), ("custom", "custom")]
PAGE_AGGREGATES = ("AVG", "MIN", "MAX", "SUM", "COUNT", "NONE")
INTERVALS = [
    (None, "auto"),
    (10_000, "10 s"),
    (MINUTE_MS, "1 min"),
    (5 * MINUTE_MS, "5 min"),
    (15 * MINUTE_MS, "15 min"),
    (HOUR_MS, "1 h"),
    (6 * HOUR_MS, "6 h"),
    (DAY_MS, "1 d"),
]
DEFAULT_KEYS = 24  # keys charted when none are picked: a device may have HUB_MAX_KEYS_PER_DEVICE of them
DEFAULT_RANGE = "24h"
DEFAULT_AGG = "AVG"


@dataclass(frozen=True, slots=True)
class HistoryChoices:
    """What the page shows: keys, a UTC range, an aggregate and an interval (None: the API chooses)."""

    keys: tuple[str, ...]
    range: str  # a PRESETS name or "custom"
    start: int  # ms UTC, inclusive
    end: int  # ms UTC, exclusive
    agg: str
    interval: int | None

    def api_params(self) -> dict[str, str | int]:
        """The API query that draws this view; its CSV export takes exactly the same parameters."""
        params: dict[str, str | int] = {"keys": ",".join(self.keys), "start": self.start, "end": self.end}
        params["agg"] = self.agg
        if self.agg == "NONE":
            params["limit"] = settings.HUB_HISTORY_MAX_LIMIT  # what the chart can hold; the page says so
            return params
        params["interval"] = self.interval or interval_auto(self.start, self.end)
        if self.agg == "AVG":
            params["band"] = 1  # the min/max band drawn around the average
        return params


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def history_choices(query: Mapping[str, str], *, known_keys: list[str], now: int) -> HistoryChoices:
    """The page's choices from its URL; anything missing or invalid falls back to a default."""
    wanted = {k.strip() for k in query.get("keys", "").split(",")}
    keys = tuple(k for k in known_keys if k in wanted) or tuple(known_keys[:DEFAULT_KEYS])
    agg = query.get("agg", "").upper()
    agg = agg if agg in PAGE_AGGREGATES else DEFAULT_AGG
    range_ = query.get("range", "")
    start, end = _int(query.get("start")), _int(query.get("end"))
    if range_ == "custom" and start is not None and end is not None and _valid_range(start, end):
        pass
    else:
        range_ = range_ if range_ in PRESETS else DEFAULT_RANGE
        start, end = now - PRESETS[range_], now
    interval = _int(query.get("interval"))
    if interval is not None and (interval < 1000 or -(-(end - start) // interval) > settings.HUB_HISTORY_MAX_BUCKETS):
        interval = None
    return HistoryChoices(keys=keys, range=range_, start=start, end=end, agg=agg, interval=interval)


def _valid_range(start: int, end: int) -> bool:
    return 0 <= start < end <= MAX_MS and end - start <= settings.HUB_HISTORY_MAX_RANGE_DAYS * DAY_MS


def history_page_context(*, device: Device, known_keys: list[str], choices: HistoryChoices) -> dict:
    """Template context: the controls, the CSV link of the initial view and the script's configuration."""
    params = choices.api_params()
    csv_url = reverse("telemetry-csv", args=[device.key])
    config = {
        "api": reverse("telemetry-history", args=[device.key]),
        "csv": csv_url,
        "presets": PRESETS,
        "maxLimit": settings.HUB_HISTORY_MAX_LIMIT,
        "choices": {
            "keys": list(choices.keys),
            "range": choices.range,
            "start": choices.start,
            "end": choices.end,
            "agg": choices.agg,
            "interval": choices.interval,
        },
    }
    return {
        "device": device,
        "known_keys": known_keys,
        "choices": choices,
        "ranges": RANGES,
        "aggregates": PAGE_AGGREGATES,
        "intervals": INTERVALS,
        "csv_url": f"{csv_url}?{urlencode(params)}",
        "config": config,
    }


@allowed(Action.VIEW)
def device_history(request: HttpRequest, key: str) -> HttpResponse:
    """One device's history: range, keys and aggregate pickers, a chart, the CSV of what it shows."""
    device = get_object_or_404(actor_in(request).devices(), key=key)
    known = keys_of_device(device.id)
    choices = history_choices(request.GET, known_keys=known, now=now_ms())
    context = history_page_context(device=device, known_keys=known, choices=choices)
    return render(request, "dashboards/history.html", context)
