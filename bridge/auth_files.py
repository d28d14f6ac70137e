"""Mosquitto's password and ACL files from the device registry: device KEY logs in as KEY with its token
and may publish only under devices/KEY/; the bridge has its own user (docs/mqtt.md)."""

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from devices.models import Device
from devices.tokens import token_broker_hash

PASSWD_NAME = "passwd"  # noqa: S105 - a file name
ACL_NAME = "acl"

# `pattern` lines hold for every user with %u = the username (a device key), so the ACL file does not change
# as devices come and go. Mosquitto refuses the substitution for names holding + # or /; keys are slugs.
_ACL = """\
# Written by `python manage.py mqtt_auth_files` (docs/mqtt.md). Do not edit: regenerate.
# Devices: username = device key, password = its access token.
pattern write devices/%u/#
pattern read devices/%u/#

# The bridge reads what every device sends (plain or shared subscription) and answers under devices/<KEY>/:
# errors, attribute updates and answers, commands (docs/commands.md).
user {bridge}
topic read devices/+/telemetry
topic read $share/+/devices/+/telemetry
topic read devices/+/attributes
topic read $share/+/devices/+/attributes
topic read devices/+/attributes/request/+
topic read $share/+/devices/+/attributes/request/+
topic read devices/+/rpc/response/+
topic read $share/+/devices/+/rpc/response/+
topic read devices/+/call/request/+
topic read $share/+/devices/+/call/request/+
topic write devices/+/#
"""


@dataclass(frozen=True, slots=True)
class AuthFiles:
    """What `auth_files_write` wrote."""

    passwd: Path
    acl: Path
    devices: int
    without_hash: list[str]  # devices created before broker hashes existed: rotate their tokens


def acl_text(*, bridge_user: str) -> str:
    return _ACL.format(bridge=bridge_user)


def passwd_text(entries: Iterable[tuple[str, str]]) -> str:
    """`user:hash` lines, the format `mosquitto_passwd` writes."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in entries)


def auth_files_write(*, out: Path, bridge_user: str, bridge_password: str) -> AuthFiles:
    """Write `passwd` and `acl` into `out`, each replaced atomically (the broker never reads half a file)."""
    rows = list(Device.objects.order_by("key").values_list("key", "broker_hash"))
    if any(key == bridge_user for key, _ in rows):
        raise ValueError(f"a device is named {bridge_user!r}, like the bridge user: choose another bridge user")
    entries = [(key, hashed) for key, hashed in rows if hashed]
    entries.append((bridge_user, token_broker_hash(bridge_password)))
    out.mkdir(parents=True, exist_ok=True)
    passwd = _replace(out / PASSWD_NAME, passwd_text(entries))
    acl = _replace(out / ACL_NAME, acl_text(bridge_user=bridge_user))
    without = [key for key, hashed in rows if not hashed]
    return AuthFiles(passwd=passwd, acl=acl, devices=len(entries) - 1, without_hash=without)


def _replace(path: Path, text: str) -> Path:
    # Not world-readable (Mosquitto warns about that); the broker reads it as owner or group (docs/mqtt.md).
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.chmod(temporary, 0o640)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
