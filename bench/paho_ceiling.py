"""The MQTT bridge's library ceiling: paho-mqtt subscribed as the bridge subscribes (MQTT 5, QoS 1, manual acks,
the bridge's receive maximum), each message parsed with the hub's parser and acknowledged at once, with no
storage, no asyncio and no Django beyond the settings the parser's limits come from.

    .venv/bin/python bench/paho_ceiling.py --port 1883 --messages 40000

`bench/mqtt.py` runs it between the broker's own ceiling (mosquitto_sub) and the bridge: what paho and the JSON
decode alone sustain in one Python process. It prints one JSON line once `--messages` have arrived: how many,
when the last arrived, and each message's latency from the `sent` value it carries (ms).
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")

import django  # noqa: E402 - the settings module must be named first

django.setup()

import orjson  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from bridge.config import bridge_config  # noqa: E402
from core.epoch import now_ms  # noqa: E402
from hub.config import HubConfig  # noqa: E402
from ingest.parsing import IngestError, parse_telemetry  # noqa: E402

LIMITS = HubConfig.from_settings().ingest.limits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True, help="exit once this many have arrived")
    parser.add_argument("--topic", default="devices/+/telemetry")
    args = parser.parse_args()
    latencies: list[float] = []
    last = [0.0]
    refused = [0]

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        client.subscribe(args.topic, qos=1)

    def on_message(client, userdata, message: mqtt.MQTTMessage) -> None:
        now = time.time()
        try:
            readings = parse_telemetry(message.payload, now_ms=now_ms(), limits=LIMITS)
            latencies.append(now * 1000 - next(r.value for r in readings if r.key == "sent"))
        except (IngestError, StopIteration):
            refused[0] += 1
        client.ack(message.mid, message.qos)
        last[0] = now
        if len(latencies) + refused[0] >= args.messages:
            client.disconnect()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-paho-{os.getpid()}",
        protocol=mqtt.MQTTv5,
        manual_ack=True,
    )
    client.on_connect = on_connect
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)
    properties.ReceiveMaximum = bridge_config().receive_maximum
    client.connect("127.0.0.1", args.port, keepalive=30, properties=properties)
    print("subscribing", flush=True)
    client.loop_forever()
    print(orjson.dumps({"messages": len(latencies), "refused": refused[0], "last": last[0], "latencies": latencies})
          .decode(), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
