"""What the hub relies on inside its dependencies, beyond their documented APIs (docs/architecture.md, "Dependencies'
internals the hub relies on"): an upgrade that changes any of it fails here, by name, before it misbehaves."""

import ast
import asyncio
import gc
import inspect
import textwrap

import pytest
from asgiref.sync import sync_to_async
from channels.consumer import AsyncConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.supervisors.multiprocess import Multiprocess
from websockets.http11 import Request

from clients.device import DeviceClient
from core.epoch import now_ms
from hub.protocols import TimedHttpProtocol, TimedWebSocketProtocol
from live.streams import BoundedStreamConsumer


def names_called(function) -> set[str]:
    """The names a function calls or awaits (its body's calls, by their last name)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called.add(func.attr if isinstance(func, ast.Attribute) else ast.unparse(func))
    return called


def test_channels_consumers_still_dispatch_the_way_the_overrides_assume():
    """The dashboard streams replace Channels' `dispatch` (and their
    `websocket_disconnect`) to skip the thread hop that closes stale ORM connections before every message. They are
    right only while Channels' versions do nothing else: a new step there would be skipped silently."""
    assert names_called(AsyncConsumer.dispatch) == {"getattr", "get_handler_name", "aclose_old_connections", "handler",
                                                    "ValueError"}  # fmt: skip
    assert names_called(AsyncWebsocketConsumer.websocket_disconnect) == {
        "group_discard", "disconnect", "aclose_old_connections", "StopConsumer", "InvalidChannelLayerError"
    }  # fmt: skip
    assert BoundedStreamConsumer.dispatch is not AsyncConsumer.dispatch
    # The streams' Outbox sends straight to the server's send, which Channels keeps as `base_send` (async consumers).
    assert "self.base_send = send" in inspect.getsource(AsyncConsumer.__call__)


def test_sockets_get_no_channel_of_their_own():
    """Dashboard streams name a channel layer that does not exist, so Channels gives them no channel, no
    subscription and no receive task (device sockets are no Channels consumers at all: transports/websocket.py)."""
    assert get_channel_layer(BoundedStreamConsumer.channel_layer_alias) is None
    assert "get_channel_layer(self.channel_layer_alias)" in inspect.getsource(AsyncConsumer.__call__)
    assert "if self.channel_layer is not None" in inspect.getsource(AsyncConsumer.__call__)


@pytest.mark.parametrize(
    ("cls", "names"),
    [
        (
            HttpToolsProtocol,
            (
                "on_message_begin",
                "on_headers_complete",
                "on_message_complete",
                "handle_websocket_upgrade",
                "connection_made",
                "connection_lost",
            ),
        ),  # fmt: skip
        (WebSocketsSansIOProtocol, ("connection_made", "connection_lost", "handle_connect")),
        (Multiprocess, ("join_all",)),
    ],
)
def test_uvicorn_protocols_still_have_what_the_deadlines_override(cls, names):
    """hub/protocols.py adds read deadlines to uvicorn's HTTP and WebSocket protocols by overriding these methods
    and reading `cycle`, `transport`, `client`, `handshake_complete` (and offers streams `write_frame`, which reads
    `close_sent` and `conn.state`, through the scope's extensions); hub/server.py bounds `Multiprocess.join_all`
    over its `processes`."""
    for name in names:
        assert callable(getattr(cls, name, None)), f"{cls.__name__}.{name} is gone"
    source = inspect.getsource(cls)
    for attribute in {HttpToolsProtocol: ("self.cycle", "self.transport", "self.client"),
                      WebSocketsSansIOProtocol: ("self.handshake_complete", "self.transport", "self.close_sent",
                                                 "self.conn", '"extensions": {'),
                      Multiprocess: ("self.processes",)}[cls]:  # fmt: skip
        assert attribute in source, f"{cls.__name__} no longer has {attribute}"


def attribute_uses(cls, attribute: str) -> dict[str, set[str]]:
    """Per method of `cls`, what it does with `self.<attribute>`: the names read from it, "=" for an assignment."""
    uses: dict[str, set[str]] = {}
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    for method in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
        for node in ast.walk(method):
            target = node.value if isinstance(node, ast.Attribute) else None
            if isinstance(target, ast.Attribute) and target.attr == attribute and ast.unparse(target.value) == "self":
                uses.setdefault(method.name, set()).add(node.attr)
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            if any(ast.unparse(t) == f"self.{attribute}" for t in targets):
                uses.setdefault(method.name, set()).add("=")
    return uses


def test_the_websocket_protocol_uses_only_what_the_lean_replacements_offer():
    """hub/protocols.py replaces the protocol's asyncio.Queue and Event with lighter ones, and drops the handshake's
    request and response once the accept is sent: right only while uvicorn uses no more of them than this."""
    offers = {"queue": {"put_nowait", "get", "empty", "qsize"}, "writable": {"set", "clear", "wait", "is_set"}}
    for attribute, offered in offers.items():
        uses = attribute_uses(WebSocketsSansIOProtocol, attribute)
        assert {m for m, names in uses.items() if "=" in names} == {"__init__"}, f"self.{attribute} is replaced"
        used = set().union(*uses.values()) - {"="}
        assert used <= offered, f"self.{attribute}: {used - offered} is used"
    for name in ("request", "response"):
        users = {m for m in _methods_mentioning(WebSocketsSansIOProtocol, f"self.{name}")}
        assert users <= {"handle_connect", "send"}, f"self.{name} is used in {users}"


def _methods_mentioning(cls, text: str) -> set[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    return {
        n.name
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(ast.unparse(x) == text for x in ast.walk(n) if isinstance(x, ast.Attribute))
    }


@pytest.mark.usefixtures("postgres", "redis")
async def test_an_accepted_device_socket_keeps_nothing_of_its_handshake(live_hub, make_device):
    """Once a device socket is accepted, the HTTP protocol that upgraded it is gone without a collector pass, and
    neither the WebSocket protocol, websockets' parser nor the scope keep the handshake's headers; the socket
    still acks (issue 26: what a quiet socket holds)."""
    device = await sync_to_async(make_device)()
    gc.collect()
    gc.disable()  # what is gone is gone by reference counting, not by a pass that may come much later
    try:
        async with DeviceClient.connect(live_hub.ws, device.token) as client:
            await client.send(f'{{"ts": {now_ms()}, "values": {{"t": 1}}}}')
            async with asyncio.timeout(10):
                await client.all_acked()
            objects = gc.get_objects()
            assert not [o for o in objects if isinstance(o, TimedHttpProtocol)]
            (protocol,) = [o for o in objects if isinstance(o, TimedWebSocketProtocol)]
            assert protocol.request is None and protocol.response is None
            assert protocol.scope["headers"] == []
            request = protocol.conn.parser.gi_frame.f_locals["request"]  # websockets' parser keeps it: emptied
            assert isinstance(request, Request) and len(request.headers) == 0
            del objects, protocol, request
            await client.send(f'{{"ts": {now_ms()}, "values": {{"t": 2}}}}')
            async with asyncio.timeout(10):
                await client.all_acked()
            assert client.acked_upto == 2 and not client.errors
    finally:
        gc.enable()
