"""Query parameters of the API's lists, validated as the history API's are (dashboards/forms.py, whose
HistoryParams also reads the alert events' range): every error names its parameter."""

from django import forms
from django.core.exceptions import ValidationError

from api.errors import ApiError
from devices.labels import labels_parse
from devices.selectors import STATUSES


def params_valid(form: forms.Form) -> dict:
    """The form's cleaned data, or 400 naming the first bad parameter."""
    if not form.is_valid():
        parameter, messages = next(iter(form.errors.items()))
        raise ApiError(400, "invalid_parameter", f"{parameter}: {messages[0]}", parameter=parameter)
    return form.cleaned_data


class DeviceFilter(forms.Form):
    q = forms.CharField(required=False, max_length=200, strip=True)
    label = forms.CharField(required=False, max_length=2000)
    status = forms.ChoiceField(required=False, choices=[(s, s) for s in STATUSES])

    def clean_label(self) -> dict[str, str]:
        try:
            return labels_parse(self.cleaned_data["label"])
        except ValidationError as exc:
            raise forms.ValidationError("; ".join(exc.messages)) from None
