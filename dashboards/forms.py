"""Validation of history API parameters; every error names its parameter."""

from django import forms
from django.conf import settings

from core.epoch import now_ms
from ingest.selectors import AGGREGATES, interval_auto

DAY_MS = 86_400_000
# The last instant a query may name: the parser stores nothing from here on (a ts this large is microseconds), and
# widened to whole buckets it stays far inside what a datetime can hold (year 9999).
MAX_MS = 10**14


class HistoryParams(forms.Form):
    keys = forms.CharField(required=False, max_length=2000)
    start = forms.IntegerField(required=False, min_value=0, max_value=MAX_MS)
    end = forms.IntegerField(required=False, min_value=0, max_value=MAX_MS)
    interval = forms.IntegerField(required=False, min_value=1, max_value=settings.HUB_HISTORY_MAX_RANGE_DAYS * DAY_MS)
    agg = forms.CharField(required=False)
    limit = forms.IntegerField(required=False, min_value=1)
    order = forms.ChoiceField(required=False, choices=[("asc", "asc"), ("desc", "desc")])
    band = forms.BooleanField(required=False)

    def clean_keys(self) -> list[str]:
        return [k.strip() for k in self.cleaned_data["keys"].split(",") if k.strip()]

    def clean_agg(self) -> str:
        agg = (self.cleaned_data["agg"] or "NONE").upper()
        if agg not in AGGREGATES:
            raise forms.ValidationError(f"one of {', '.join(AGGREGATES)}")
        return agg

    def __init__(self, *args, csv: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # A CSV export streams, so it may hold far more raw rows than a JSON page.
        self.max_limit = settings.HUB_HISTORY_CSV_MAX_ROWS if csv else settings.HUB_HISTORY_MAX_LIMIT
        self.default_limit = self.max_limit if csv else 100

    def clean_limit(self) -> int:
        limit = self.cleaned_data["limit"] or self.default_limit
        if limit > self.max_limit:
            raise forms.ValidationError(f"at most {self.max_limit}")
        return limit

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        end = data["end"] if data["end"] is not None else now_ms()
        start = data["start"] if data["start"] is not None else end - DAY_MS
        if start >= end:
            self.add_error("start", "must be before end")
            return data
        if end - start > settings.HUB_HISTORY_MAX_RANGE_DAYS * DAY_MS:
            self.add_error("end", f"the range is limited to {settings.HUB_HISTORY_MAX_RANGE_DAYS} days")
            return data
        data["start"], data["end"] = start, end
        if data["agg"] == "NONE":
            data["interval"] = None
        elif data["interval"] is None:
            data["interval"] = interval_auto(start, end)
        elif -(-(end - start) // data["interval"]) > settings.HUB_HISTORY_MAX_BUCKETS:
            self.add_error("interval", f"more than {settings.HUB_HISTORY_MAX_BUCKETS} buckets; use a larger interval")
        return data


class WindowParams(forms.Form):
    """A live chart's window (`/api/v1/devices/<KEY>/window`): keys, [start, end) and the chart's width."""

    keys = forms.CharField(required=False, max_length=2000)
    start = forms.IntegerField(min_value=0)
    end = forms.IntegerField(min_value=0)
    px = forms.IntegerField(required=False, min_value=10, max_value=4000)

    def clean_keys(self) -> list[str]:
        return [k.strip() for k in self.cleaned_data["keys"].split(",") if k.strip()]

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        if data["start"] >= data["end"]:
            self.add_error("start", "must be before end")
        elif data["end"] - data["start"] > settings.HUB_HISTORY_MAX_RANGE_DAYS * DAY_MS:
            self.add_error("end", f"the range is limited to {settings.HUB_HISTORY_MAX_RANGE_DAYS} days")
        data["px"] = data["px"] or 1000
        return data
