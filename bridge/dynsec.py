"""Broker credentials that follow the registry: Mosquitto's dynamic-security plugin, administered over its control
topic as HUB_MQTT_ADMIN_URL (docs/mqtt.md, "Credentials that follow the registry").

Device KEY's broker client is KEY with its token as password and one role, `device:KEY`, allowing only
devices/KEY/#. The live path sends a token while its plaintext exists (create, rotate) and deletes the clients of
deleted devices; `registry_sync` repairs what the control topic can, and `dynsec_file_write` writes the plugin's file
from the stored hashes for a broker about to start. Command and file shapes: plugins/dynamic-security (2.0.11).
"""

import base64
import hashlib
import json
import logging
import os
import secrets
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from django.conf import settings
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from bridge.config import BrokerLogin, admin_login
from core import metrics
from devices.models import Device
from devices.tokens import token_broker_hash, token_hash

logger = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
# Without answers for this long the broker is taken as away. An idle bound, not a total: a bulk create waits while
# the broker keeps answering (each command rewrites the plugin's whole file: docs/mqtt.md, "Limits").
TIMEOUT_SECONDS = 2.0
# Past this many devices in one change the broker is not told live: its per-command file rewrite makes a bulk create
# quadratic (0.3 s for 100 devices, ~12 s for 1,000, ~20 min for 10,000), which would hold the import's answer
# and the broker: larger imports are written with `mqtt_dynsec_sync --init` or their devices rotated.
LIVE_MAX_DEVICES = 100  # ~0.3 s: what a request may wait for
ADMIN_ROLE, BRIDGE_ROLE, DEVICE_ROLE = "hub-admin", "hub-bridge", "device:"
# A device client's textdescription: a fingerprint of the token the broker holds, so `registry_sync` can tell a
# client whose password is not the device's current token (a rotation the broker missed) without any secret.
FINGERPRINT = "hub-token:"
# A fresh file's defaults (the plugin's own is deny for sending and subscribing): every grant comes from a role.
DEFAULT_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True}
_ROLE_EXISTS, _ROLE_MISSING = "Role already exists", "Role not found"
_CLIENT_EXISTS, _CLIENT_MISSING = "Client already exists", "Client not found"


Command = dict[str, Any]


class DynsecError(Exception):
    """The broker could not be reached, refused a command, or stopped answering."""


def device_role(key: str) -> str:
    return f"{DEVICE_ROLE}{key}"


def token_fingerprint(hashed: str) -> str:
    """From the registry's SHA-256 of a token (`token_hash`): tells tokens apart, and reveals nothing of one."""
    return FINGERPRINT + hashlib.sha256(f"mqtt-dynsec:{hashed}".encode()).hexdigest()[:16]


def _acls(topics: Iterable[str], types: Iterable[str]) -> list[dict[str, Any]]:
    return [{"acltype": kind, "topic": topic, "allow": True} for topic in topics for kind in types]


_DEVICE_TYPES = ("publishClientSend", "publishClientReceive", "subscribePattern", "unsubscribePattern")


def device_acls(key: str) -> list[dict[str, Any]]:
    # Literal topics: 2.0.11 does not substitute %u in a role's ACLs, hence one role per device.
    return _acls([f"devices/{key}/#"], _DEVICE_TYPES)


BRIDGE_ACLS = [
    *_acls(["devices/+/#", "$share/+/devices/+/#"], ["subscribePattern", "unsubscribePattern"]),
    *_acls(["devices/+/#"], ["publishClientReceive", "publishClientSend"]),  # telemetry in, errors out
]
ADMIN_ACLS = [
    *_acls(["$CONTROL/dynamic-security/#"], ["publishClientSend", "publishClientReceive", "subscribePattern"]),
    *_acls(["$SYS/#"], ["publishClientReceive", "subscribePattern"]),  # health checks
]


class ControlSession:
    """One admin connection to the control topic, driven in the calling thread (paho's manual loop): nothing
    outlives the `with` block, so a registry change in any thread or command needs no process-wide client."""

    def __init__(self, config: BrokerLogin, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.config, self.timeout = config, timeout
        self._answers: dict[str, Command] = {}
        self._connack: ReasonCode | None = None
        self._suback: list[ReasonCode] | None = None
        self._run = secrets.token_hex(6)  # correlation ids: every admin connection receives every response
        self._sent = 0
        self._login_deadline = 0.0
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hub-dynsec-{self._run}", protocol=mqtt.MQTTv5)
        client.username_pw_set(config.username, config.password)
        if config.tls:
            client.tls_set_context(ssl.create_default_context())
        client.connect_timeout = timeout
        client.on_connect = lambda _c, _u, _f, reason, _p: setattr(self, "_connack", reason)
        client.on_subscribe = lambda _c, _u, _m, reasons, _p: setattr(self, "_suback", reasons)
        client.on_message = self._on_message
        self._client = client

    def __enter__(self) -> "ControlSession":
        try:
            if not self.login():
                raise DynsecError(f"the broker refused the admin {self.config.username!r}: {self._connack}")
            self._client.subscribe(RESPONSE_TOPIC, qos=1)
            self._wait(lambda: self._suback is not None, "SUBACK", until=self._login_deadline)
            if any(reason.is_failure for reason in self._suback or []):
                raise DynsecError(f"the admin {self.config.username!r} may not read {RESPONSE_TOPIC}")
        except BaseException:
            self.close()
            raise
        return self

    def login(self) -> bool:
        """Connect; whether the broker accepted the credentials. Connecting, logging in and subscribing share one
        `timeout`: a broker that is away costs no more."""
        self._login_deadline = time.monotonic() + self.timeout
        try:
            self._client.connect(self.config.host, self.config.port, keepalive=30)
        except OSError as exc:
            raise DynsecError(f"cannot reach the broker at {self.config.host}:{self.config.port}: {exc}") from None
        self._wait(lambda: self._connack is not None, "CONNACK", until=self._login_deadline)
        return self._connack is not None and not self._connack.is_failure

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client.is_connected():
            self._client.disconnect()
        self._client.loop(timeout=0.01)  # writes the DISCONNECT, or closes a socket that never logged in

    def run(self, messages: Iterable[Sequence[Command]]) -> list[Command]:
        """Send each message's commands (the broker applies a message's in order, and messages in order) and
        return every command's answer, in order. Small messages let other clients through between them."""
        ids: list[str] = []
        for commands in messages:
            tagged = [{**command, "correlationData": self._next_id()} for command in commands]
            ids += [command["correlationData"] for command in tagged]
            self._client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=0)
        self._wait(lambda: all(i in self._answers for i in ids), f"answers to {len(ids)} commands")
        return [self._answers.pop(i) for i in ids]

    def _next_id(self) -> str:
        self._sent += 1
        return f"{self._run}-{self._sent}"

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        for answer in json.loads(message.payload).get("responses", []):
            if str(answer.get("correlationData", "")).startswith(f"{self._run}-"):
                self._answers[answer["correlationData"]] = answer

    def _wait(self, done: Callable[[], bool], what: str, *, until: float | None = None) -> None:
        """Run paho's loop until `done`: by `until`, or while answers keep coming at most `timeout` apart."""
        deadline, answered = until or time.monotonic() + self.timeout, len(self._answers)
        while not done():
            rc = self._client.loop(timeout=0.05)
            if done():
                return
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise DynsecError(f"lost the broker waiting for {what} ({rc.name})")
            if until is None and len(self._answers) != answered:  # progress: the broker works through a batch
                deadline, answered = time.monotonic() + self.timeout, len(self._answers)
            if time.monotonic() > deadline:
                raise DynsecError(f"no {what} from the broker within {self.timeout:g} s")


def _refused(answers: Iterable[Command], tolerated: Iterable[str] = ()) -> None:
    """DynsecError naming each command the broker refused (its words never hold a password)."""
    failed = [f"{a['command']}: {a['error']}" for a in answers if a.get("error") and a["error"] not in tolerated]
    if failed:
        raise DynsecError(f"the broker refused {len(failed)} command(s): {'; '.join(failed[:5])}")


def _client_create(username: str, password: str, role: str, description: str = "") -> Command:
    command = {"command": "createClient", "username": username, "password": password, "roles": [{"rolename": role}]}
    return command | ({"textdescription": description} if description else {})


def device_clients_set(config: BrokerLogin, tokens: Mapping[str, str], *, timeout: float = TIMEOUT_SECONDS) -> None:
    """Each device's broker client logs in with its token from now on: created with its role if missing, else its
    password and role replaced, which disconnects whoever was logged in with the old token."""
    with ControlSession(config, timeout=timeout) as broker:
        answers = broker.run([_role_create(key), _device_client_create(key, token)] for key, token in tokens.items())
        _refused(answers, tolerated=(_ROLE_EXISTS, _CLIENT_EXISTS))
        clients = answers[1::2]  # each device's createClient
        existing = [key for key, answer in zip(tokens, clients, strict=True) if answer.get("error") == _CLIENT_EXISTS]
        _refused(broker.run([_device_client_modify(key, tokens[key])] for key in existing))


def _role_create(key: str) -> Command:
    return {"command": "createRole", "rolename": device_role(key), "acls": device_acls(key)}


def _device_client_create(key: str, token: str) -> Command:
    return _client_create(key, token, device_role(key), token_fingerprint(token_hash(token)))


def _device_client_modify(key: str, token: str) -> Command:
    # One command, one rewrite of the plugin's file; the broker disconnects the client's connections after it.
    return {
        "command": "modifyClient",
        "username": key,
        "password": token,
        "roles": [{"rolename": device_role(key)}],
        "textdescription": token_fingerprint(token_hash(token)),
    }


def device_clients_delete(config: BrokerLogin, keys: Iterable[str], *, timeout: float = TIMEOUT_SECONDS) -> None:
    """Delete the devices' broker clients and roles: their connections are closed and their tokens refused."""
    with ControlSession(config, timeout=timeout) as broker:
        answers = broker.run(
            [{"command": "deleteClient", "username": key}, {"command": "deleteRole", "rolename": device_role(key)}]
            for key in keys
        )
        _refused(answers, tolerated=(_CLIENT_MISSING, _ROLE_MISSING))


def broker_credentials_changed(*, created: Mapping[str, str], deleted: Iterable[str], **signal: object) -> None:
    """The registry's change has committed (devices/signals.py): tell the broker. `created` maps each created or
    rotated device's key to its new token, `deleted` lists deleted keys. A broker that is away never fails the
    change: a warning and hub_mqtt_credentials_unsent_total, and `mqtt_dynsec_sync` repairs. Nothing without
    HUB_MQTT_ADMIN_URL."""
    tokens, gone = dict(created), list(deleted)
    if not settings.HUB_MQTT_ADMIN_URL or not (tokens or gone):
        return
    if len(tokens) > LIVE_MAX_DEVICES:
        _unsent(tokens, gone, f"more than {LIVE_MAX_DEVICES} devices at once")
    else:
        _broker_told(tokens, gone)


def _broker_told(tokens: dict[str, str], gone: list[str]) -> None:
    try:
        config = admin_login()
        if config is not None and tokens:
            device_clients_set(config, tokens)
        if config is not None and gone:
            device_clients_delete(config, gone)
    except Exception as exc:  # noqa: BLE001 - the registry change has committed: it must not fail now
        _unsent(tokens, gone, f"{type(exc).__name__}: {exc}")


def _unsent(tokens: dict[str, str], gone: list[str], why: str) -> None:
    metrics.MQTT_CREDENTIALS_UNSENT.inc()
    keys = sorted([*tokens, *gone])
    logger.warning(  # the keys and the broker's words only: never a token
        "mqtt credentials: the broker was not told of %d created or rotated and %d deleted device(s) (%s%s): %s; "
        "run `manage.py mqtt_dynsec_sync` (docs/mqtt.md)",
        len(tokens),
        len(gone),
        ", ".join(keys[:10]),
        ", …" if len(keys) > 10 else "",
        why,
    )


# Bringing a broker in line ------------------------------------------------------------------------------------


@dataclass(slots=True)
class SyncReport:
    """What `registry_sync` changed, and what it could not: by username or role name."""

    roles_created: list[str] = field(default_factory=list)
    roles_fixed: list[str] = field(default_factory=list)  # ACLs other than the hub's
    roles_deleted: list[str] = field(default_factory=list)
    clients_created: list[str] = field(default_factory=list)  # the bridge only: no device's plaintext is kept
    clients_fixed: list[str] = field(default_factory=list)  # their role added
    clients_deleted: list[str] = field(default_factory=list)  # devices the registry no longer has
    clients_stale: list[str] = field(default_factory=list)  # a password that is not the current token: deleted
    missing: list[str] = field(default_factory=list)  # devices with no client: --init, or rotate their tokens
    bridge_password_set: bool = False


def registry_sync(
    config: BrokerLogin, *, bridge_user: str | None, bridge_password: str | None, timeout: float = 10.0
) -> SyncReport:
    """Bring the broker in line with the registry over the control topic: roles created or fixed, the bridge's
    client created or given its password, clients of deleted devices and of stale tokens deleted. A missing
    device client cannot be created (the hub keeps no plaintext token): it is named in `missing`."""
    with ControlSession(config, timeout=timeout) as broker:
        roles, clients = _broker_state(broker)
        registry = dict(Device.objects.values_list("key", "token_hash"))  # after the broker's: see docs/mqtt.md
        if bridge_user in registry or config.username in registry:
            raise ValueError("a device is named like the bridge or the admin user: choose other usernames")
        report = SyncReport()
        messages = _roles_plan(roles, registry, with_bridge=bool(bridge_user), report=report)
        if bridge_user:
            messages += _bridge_plan(clients.get(bridge_user), bridge_user, bridge_password, report=report)
        messages += _devices_plan(roles, clients, registry, report=report)
        _refused(broker.run(messages))
    if bridge_user and bridge_password and bridge_user not in report.clients_created:
        bridge = BrokerLogin(config.host, config.port, config.tls, bridge_user, bridge_password)
        if not login_works(bridge, timeout=timeout):
            with ControlSession(config, timeout=timeout) as broker:
                command = {"command": "setClientPassword", "username": bridge_user, "password": bridge_password}
                _refused(broker.run([[command]]))
            report.bridge_password_set = True
    return report


def _broker_state(broker: ControlSession) -> tuple[dict[str, set[tuple]], dict[str, Command]]:
    """Roles (name -> ACLs) and clients (username -> client) of the broker."""
    listed = broker.run([[{"command": "listRoles", "verbose": True}, {"command": "listClients", "verbose": True}]])
    _refused(listed)
    roles = {role["rolename"]: _acl_set(role.get("acls", [])) for role in listed[0]["data"]["roles"]}
    return roles, {client["username"]: client for client in listed[1]["data"]["clients"]}


def _acl_set(acls: Iterable[dict[str, Any]]) -> set[tuple]:
    return {(acl["acltype"].lower(), acl["topic"], bool(acl.get("allow"))) for acl in acls}


def _role_names(client: Command) -> set[str]:
    return {role["rolename"] for role in client.get("roles", [])}


def _roles_plan(
    roles: dict[str, set[tuple]], registry: Mapping[str, str], *, with_bridge: bool, report: SyncReport
) -> list[list[Command]]:
    wanted = {device_role(key): device_acls(key) for key in registry} | (
        {BRIDGE_ROLE: BRIDGE_ACLS} if with_bridge else {}
    )
    messages = []
    for name, acls in wanted.items():
        if name not in roles:
            messages.append([{"command": "createRole", "rolename": name, "acls": acls}])
            report.roles_created.append(name)
        elif roles[name] != _acl_set(acls):
            messages.append([{"command": "modifyRole", "rolename": name, "acls": acls}])
            report.roles_fixed.append(name)
    return messages


def _bridge_plan(client: Command | None, user: str, password: str | None, *, report: SyncReport) -> list[list[Command]]:
    if client is None and password:
        report.clients_created.append(user)
        return [[_client_create(user, password, BRIDGE_ROLE)]]
    if client is None:
        report.missing.append(user)
    elif BRIDGE_ROLE not in _role_names(client):
        report.clients_fixed.append(user)
        return [[{"command": "addClientRole", "username": user, "rolename": BRIDGE_ROLE}]]
    return []


def _devices_plan(
    roles: Mapping[str, object], clients: Mapping[str, Command], registry: Mapping[str, str], *, report: SyncReport
) -> list[list[Command]]:
    messages = []
    for username, client in clients.items():
        if username in registry:
            if client.get("textdescription") != token_fingerprint(registry[username]):
                messages.append([{"command": "deleteClient", "username": username}])
                report.clients_stale.append(username)
            elif device_role(username) not in _role_names(client):
                messages.append([{"command": "addClientRole", "username": username, "rolename": device_role(username)}])
                report.clients_fixed.append(username)
        elif device_role(username) in _role_names(client) or client.get("textdescription", "").startswith(FINGERPRINT):
            messages.append([{"command": "deleteClient", "username": username}])
            report.clients_deleted.append(username)
    for name in roles:
        if name.startswith(DEVICE_ROLE) and name.removeprefix(DEVICE_ROLE) not in registry:
            messages.append([{"command": "deleteRole", "rolename": name}])
            report.roles_deleted.append(name)
    report.missing += sorted(key for key in registry if key not in clients or key in report.clients_stale)
    return messages


def login_works(config: BrokerLogin, *, timeout: float = TIMEOUT_SECONDS) -> bool:
    """Whether the broker accepts these credentials (a throwaway client id: nobody logged in is disconnected)."""
    session = ControlSession(config, timeout=timeout)
    try:
        return session.login()
    finally:
        session.close()


# The plugin's file, for a broker about to start ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileReport:
    """What `dynsec_file_write` wrote."""

    path: Path
    devices: int
    kept: list[str]  # clients the hub does not manage, kept as they were
    without_hash: list[str]  # devices registered before broker hashes existed: rotate their tokens


def dynsec_file_write(
    path: Path, *, admin: BrokerLogin | None, bridge_user: str | None, bridge_password: str | None
) -> FileReport:
    """Write the plugin's JSON file from the registry: the admin and the bridge with their passwords, every device
    with its stored broker hash. An existing file keeps what the hub does not manage (other clients, roles,
    groups, default access). The broker reads it only when it starts, and rewrites it on every change: write it
    while the broker is stopped."""
    rows = list(Device.objects.order_by("key").values_list("key", "token_hash", "broker_hash"))
    logins = {name for name in (bridge_user, admin.username if admin else None) if name}
    if logins & {key for key, _, _ in rows}:
        raise ValueError("a device is named like the bridge or the admin user: choose other usernames")
    ours = logins | {key for key, _, _ in rows}
    tree = json.loads(path.read_text()) if path.exists() else {"defaultACLAccess": DEFAULT_ACCESS}
    clients = [c for c in tree.get("clients", []) if not _hub_client(c, ours)]
    roles = [r for r in tree.get("roles", []) if r.get("rolename") not in (ADMIN_ROLE, BRIDGE_ROLE)]
    roles = [r for r in roles if not str(r.get("rolename", "")).startswith(DEVICE_ROLE)]
    kept = [c["username"] for c in clients]
    if admin:
        clients.append(_stored_client(admin.username, token_broker_hash(admin.password), ADMIN_ROLE))
        roles.append({"rolename": ADMIN_ROLE, "acls": ADMIN_ACLS})
    if bridge_user and bridge_password:
        clients.append(_stored_client(bridge_user, token_broker_hash(bridge_password), BRIDGE_ROLE))
        roles.append({"rolename": BRIDGE_ROLE, "acls": BRIDGE_ACLS})
    without = []
    for key, hashed, broker_hash in rows:
        roles.append({"rolename": device_role(key), "acls": device_acls(key)})  # for a later rotation too
        if _stored_password(broker_hash) is None:
            without.append(key)
        else:
            clients.append(_stored_client(key, broker_hash, device_role(key), token_fingerprint(hashed)))
    _replace(path, json.dumps({**tree, "clients": clients, "roles": roles}, indent=1))
    return FileReport(path=path, devices=len(rows) - len(without), kept=kept, without_hash=without)


def _hub_client(client: Command, ours: set[str]) -> bool:
    names = {str(role.get("rolename", "")) for role in client.get("roles", [])}
    fingerprinted = str(client.get("textdescription", "")).startswith(FINGERPRINT)
    return client.get("username") in ours or fingerprinted or any(n.startswith(DEVICE_ROLE) for n in names)


def _stored_password(broker_hash: str) -> dict[str, Any] | None:
    """The plugin's `password`, `salt` (base64) and `iterations` from a `$7$` hash (devices/tokens.py): the same
    PBKDF2-SHA512 with a 12-byte salt and a 64-byte hash, which is all the plugin loads."""
    parts = broker_hash.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return None
    try:
        if len(base64.b64decode(parts[3])) != 12 or len(base64.b64decode(parts[4])) != 64:
            return None
    except ValueError:
        return None
    return {"password": parts[4], "salt": parts[3], "iterations": int(parts[2])}


def _stored_client(username: str, broker_hash: str, role: str, description: str = "") -> Command:
    stored = _stored_password(broker_hash)
    assert stored is not None, username  # noqa: S101 - the callers' hashes are token_broker_hash's
    client = {"username": username, **stored, "roles": [{"rolename": role}]}
    return client | ({"textdescription": description} if description else {})


def _replace(path: Path, text: str) -> None:
    # Atomic (the broker never reads half a file), private (it holds password hashes), and the owner of the file it
    # replaces kept when allowed: the broker, running as `mosquitto`, rewrites it on every change.
    previous = path.stat() if path.exists() else None
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.chmod(temporary, 0o600)
        if previous is not None and os.geteuid() == 0:
            os.chown(temporary, previous.st_uid, previous.st_gid)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
