"""Query parameters of the API: the history endpoints' (HistoryParams also reads the alert events' range), the
live window's and the lists'. Every error names its parameter."""

from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from api.errors import ApiError
from core.epoch import MAX_MS, now_ms
from devices.labels import labels_parse
from devices.selectors import STATUSES
from history.selectors import AGGREGATES, interval_auto

DAY_MS = 86_400_000


def params_valid(form: forms.Form) -> dict:
    """The form's cleaned data, or 400 naming the first bad parameter."""
    if not form.is_valid():
        parameter, messages = next(iter(form.errors.items()))
        raise ApiError(400, "invalid_parameter", f"{parameter}: {messages[0]}", parameter=parameter)
    return form.cleaned_data


def _cleaned(form: forms.Form, data: dict[str, Any] | None) -> dict[str, Any]:
    """What a form's `clean()` answered, or its cleaned data where it answered None (as Django takes it)."""
    return form.cleaned_data if data is None else data


class DeviceFilter(forms.Form):
    q = forms.CharField(required=False, max_length=200, strip=True)
    label = forms.CharField(required=False, max_length=2000)
    status = forms.ChoiceField(required=False, choices=[(s, s) for s in STATUSES])

    def clean_label(self) -> dict[str, str]:
        try:
            return labels_parse(self.cleaned_data["label"])
        except ValidationError as exc:
            raise forms.ValidationError("; ".join(exc.messages)) from None


class HistoryParams(forms.Form):
    keys = forms.CharField(required=False, max_length=2000)
    start = forms.IntegerField(required=False, min_value=0, max_value=MAX_MS)
    end = forms.IntegerField(required=False, min_value=0, max_value=MAX_MS)
    interval = forms.IntegerField(required=False, min_value=1, max_value=settings.HUB_HISTORY_MAX_RANGE_DAYS * DAY_MS)
    agg = forms.CharField(required=False)
    limit = forms.IntegerField(required=False, min_value=1)
    order = forms.ChoiceField(required=False, choices=[("asc", "asc"), ("desc", "desc")])
    band = forms.BooleanField(required=False)
    cursor = forms.CharField(required=False, max_length=200)  # the `next` of the previous page of this answer

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
        data = _cleaned(self, super().clean())
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
    start = forms.IntegerField(min_value=0, max_value=MAX_MS)
    end = forms.IntegerField(min_value=0, max_value=MAX_MS)
    px = forms.IntegerField(required=False, min_value=10, max_value=4000)

    def clean_keys(self) -> list[str]:
        return [k.strip() for k in self.cleaned_data["keys"].split(",") if k.strip()]

    def clean(self) -> dict:
        data = _cleaned(self, super().clean())
        if self.errors:
            return data
        if data["start"] >= data["end"]:
            self.add_error("start", "must be before end")
        elif data["end"] - data["start"] > settings.HUB_HISTORY_MAX_RANGE_DAYS * DAY_MS:
            self.add_error("end", f"the range is limited to {settings.HUB_HISTORY_MAX_RANGE_DAYS} days")
        data["px"] = data["px"] or 1000
        return data


class AuditFilter(forms.Form):
    """The audit log's filters (`GET /api/v1/audit`): who, what, which object, [start, end); each optional."""

    actor = forms.CharField(required=False, max_length=150)
    action = forms.CharField(required=False, max_length=40)
    object_type = forms.CharField(required=False, max_length=40)
    object_id = forms.CharField(required=False, max_length=200)
    start = forms.IntegerField(required=False, min_value=0, max_value=MAX_MS)
    end = forms.IntegerField(required=False, min_value=0, max_value=MAX_MS)

    def clean(self) -> dict:
        data = _cleaned(self, super().clean())
        if not self.errors and None not in (data["start"], data["end"]) and data["start"] >= data["end"]:
            self.add_error("start", "must be before end")
        return data
