"""A device's attributes and commands over HTTP, on ThingsBoard's paths and payloads (its HTTP device API), so
a device written for ThingsBoard talks to the hub unchanged (docs/commands.md):

- `POST /api/v1/<TOKEN>/attributes`: its client attributes; `GET` with `clientKeys`/`sharedKeys`: attributes;
- `GET /api/v1/<TOKEN>/attributes/updates?timeout=MS`: the next shared attribute update (long-poll; 408);
- `GET /api/v1/<TOKEN>/rpc?timeout=MS`: the next command `{id, method, params}` (long-poll; 408);
- `POST /api/v1/<TOKEN>/rpc/<ID>`: the response to a two-way command;
- `POST /api/v1/<TOKEN>/rpc`: a call to the hub `{method, params}` (client-side RPC), answered at once."""

import asyncio
from typing import Any

import orjson
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from control.attributes import AttributesRefused
from control.bus import ControlBus
from control.commands import CommandRefused, command_for_device
from control.device_side import (
    CallRefused,
    Inbox,
    attributes_asked,
    client_attributes_report,
    command_reply,
    commands_taken,
    commands_told,
    device_call,
)
from core.state import runtime_in
from devices.services import DeviceIdentity, device_authenticate
from transports.shared import transports_in


class NotJson(ValueError):
    """The body is not JSON."""


def _error(status: int, code: str, message: str, **extra: object) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


async def _device(request: ASGIRequest, token: str) -> DeviceIdentity | JsonResponse:
    if transports_in(request.scope) is None:
        return _error(421, "misdirected", "this hub process serves dashboard streams (HUB_ROLE=stream)")
    device = await device_authenticate(token=token)
    return device if device is not None else _error(401, "unauthorized", "unknown device token")


def _body(request: ASGIRequest) -> object:
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise NotJson from None


def _keys(request: ASGIRequest, name: str) -> list[str] | None:
    text = request.GET.get(name)
    return None if text is None else [key.strip() for key in text.split(",") if key.strip()]


def _timeout(request: ASGIRequest) -> float | JsonResponse:
    """The long-poll's wait in seconds: `timeout` ms (0 or absent: the longest, HUB_DEVICE_POLL_MAX_SECONDS)."""
    longest = settings.HUB_DEVICE_POLL_MAX_SECONDS
    text = request.GET.get("timeout", "0")
    if not text.isdigit() or len(text) > 12:
        return _error(400, "invalid_parameter", "timeout: milliseconds, a whole number", parameter="timeout")
    return min(int(text) / 1000, longest) or longest


def _bus(request: ASGIRequest) -> ControlBus:
    return runtime_in(request.scope).control


@csrf_exempt
@require_http_methods(["GET", "POST"])
async def attributes(request: ASGIRequest, token: str) -> HttpResponse:
    device = await _device(request, token)
    if isinstance(device, JsonResponse):
        return device
    if request.method == "POST":
        try:
            await client_attributes_report(device, _body(request))
        except NotJson:
            return _error(400, "malformed_json", 'send a JSON object of attributes, e.g. {"firmware": "1.2.0"}')
        except AttributesRefused as refused:
            return _error(400, "invalid", refused.message, field=refused.field)
        return HttpResponse(status=200)
    try:
        answer = await attributes_asked(device, _keys(request, "clientKeys"), _keys(request, "sharedKeys"))
    except AttributesRefused as refused:
        return _error(400, "invalid_parameter", refused.message, parameter=refused.field)
    return JsonResponse(answer)


async def _polled(request: ASGIRequest, token: str) -> tuple[DeviceIdentity, Inbox, float] | JsonResponse:
    device = await _device(request, token)
    if isinstance(device, JsonResponse):
        return device
    timeout = _timeout(request)
    if isinstance(timeout, JsonResponse):
        return timeout
    bus = _bus(request)
    if bus.listening(device.key) >= settings.HUB_DEVICE_POLLS_PER_DEVICE:
        return _error(429, "too_many_polls", "this device has enough long-polls open here", retry=True)
    return device, Inbox(bus, device.key), timeout


@csrf_exempt
@require_GET
async def attribute_updates(request: ASGIRequest, token: str) -> HttpResponse:
    polled = await _polled(request, token)
    if isinstance(polled, JsonResponse):
        return polled
    _, inbox, timeout = polled
    with inbox:
        try:
            async with asyncio.timeout(timeout):
                await inbox.updated.wait()
        except TimeoutError:
            return HttpResponse(status=408)
    merged: dict[str, Any] = {}
    for update in inbox.updates_taken():  # several changes during one wait: the latest of each key
        deleted = merged.pop("deleted", []) + update.pop("deleted", [])
        merged = {k: v for k, v in merged.items() if k not in deleted} | update
        if deleted := [key for key in deleted if key not in update]:
            merged["deleted"] = deleted
    return JsonResponse(merged)


@csrf_exempt
@require_http_methods(["GET", "POST"])
async def rpc(request: ASGIRequest, token: str) -> HttpResponse:
    if request.method == "POST":
        return await _call(request, token)
    polled = await _polled(request, token)
    if isinstance(polled, JsonResponse):
        return polled
    device, inbox, timeout = polled
    deadline = asyncio.get_running_loop().time() + timeout
    with inbox:
        while True:
            inbox.commands.clear()
            # Handing it in this answer is its delivery (ThingsBoard's HTTP transport says the same).
            taken = await commands_taken(device, again=False, delivered=True, limit=1)  # one per answer
            if taken:
                break
            try:
                async with asyncio.timeout(deadline - asyncio.get_running_loop().time()):
                    await inbox.commands.wait()
            except TimeoutError:
                return HttpResponse(status=408)
    await commands_told(_bus(request), taken)
    return JsonResponse(command_for_device(taken[0]))


async def _call(request: ASGIRequest, token: str) -> HttpResponse:
    device = await _device(request, token)
    if isinstance(device, JsonResponse):
        return device
    try:
        answer = await device_call(device, _body(request))
    except NotJson:
        return _error(400, "malformed_json", 'send {"method": "...", "params": {...}}')
    except CallRefused as refused:
        return _error(404 if refused.code == "unknown_method" else 400, refused.code, refused.message)
    return JsonResponse(answer, safe=False)


@csrf_exempt
@require_POST
async def rpc_reply(request: ASGIRequest, token: str, command_id: int) -> HttpResponse:
    device = await _device(request, token)
    if isinstance(device, JsonResponse):
        return device
    try:
        answered = await command_reply(_bus(request), device, command_id, _body(request))
    except NotJson:
        return _error(400, "malformed_json", 'the response is JSON, e.g. {"status": "ok"}')
    except CommandRefused as refused:
        return _error(refused.status, refused.code, refused.message)
    if not answered:
        return _error(404, "unknown_command", f"no command {command_id} waits for a response from this device")
    return HttpResponse(status=200)
