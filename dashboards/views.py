"""Operator pages (login required)."""

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from dashboards.selectors import fleet_status, readings_recent
from devices.models import Device


@login_required
def fleet(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboards/fleet.html", {"fleet": fleet_status()})


@login_required
def fleet_json(request: HttpRequest) -> JsonResponse:
    """The fleet page's periodic refresh (statuses, rates, alerts, new devices)."""
    return JsonResponse(fleet_status())


@login_required
def device_detail(request: HttpRequest, key: str) -> HttpResponse:
    device = get_object_or_404(Device, key=key)
    history = readings_recent(device=device, since=timezone.now() - timedelta(minutes=15))
    return render(request, "dashboards/device.html", {"device": device, "history": history})
