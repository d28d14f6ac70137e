"""The stack's ceiling: a bare ASGI app under the hub's own uvicorn settings that reads each WebSocket frame (or
each HTTP post's body), parses it with the hub's parser and acks it at once, with no storage, no fan-out and no
Django.

    .venv/bin/python bench/stack_ceiling.py --port 8123      # then drive it as a hub: ws://127.0.0.1:8123/…

`bench/ingest.py` (WebSocket) and `bench/http_ingest.py` (HTTP) run it beside the hub and print each scenario as
a ratio to it: what the hub costs above the server, the protocol and the JSON decode that any ingest pays. It
speaks the device side of the hub's protocols (`{"ack": N}` after frame N, an error frame for a bad one; a POST
answered `{"ok":true}`, 400 with the error), so the same client drives both. It answers `/healthz` like the hub,
so the same readiness probe works.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")

import django  # noqa: E402 - the settings module must be named first

django.setup()

import orjson  # noqa: E402
import uvicorn  # noqa: E402

from core.epoch import now_ms  # noqa: E402
from hub.config import HubConfig  # noqa: E402
from hub.server import uvicorn_options  # noqa: E402
from ingest.parsing import IngestError, parse_telemetry  # noqa: E402
from transports.http import request_body  # noqa: E402

LIMITS = HubConfig.from_settings().ingest.limits  # the limits the hub applies


async def app(scope, receive, send) -> None:
    if scope["type"] == "http":
        await http_post(scope, receive, send)
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    frame = 0
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            return
        frame += 1
        body = event.get("text") or event.get("bytes") or b""
        try:
            parse_telemetry(body, now_ms=now_ms(), limits=LIMITS)
            answer = {"ack": frame}
        except IngestError as error:
            answer = {"error": {"frame": frame, **error.as_dict()}}
        await send({"type": "websocket.send", "text": orjson.dumps(answer).decode()})


async def http_post(scope, receive, send) -> None:
    """A POST's body parsed as the hub's telemetry route parses it, answered as the hub answers; anything else
    (the readiness probe) `ok`."""
    body = await request_body(receive)
    if body is None:
        return
    status, content, kind = 200, b"ok", b"text/plain"
    if scope["method"] == "POST":
        try:
            parse_telemetry(body, now_ms=now_ms(), limits=LIMITS)
            content = b'{"ok":true}'
        except IngestError as error:
            status, content = 400, orjson.dumps({"error": error.as_dict()})
        kind = b"application/json"
    headers = [(b"content-type", kind), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, **{**uvicorn_options(), "lifespan": "off"})


if __name__ == "__main__":
    main()
