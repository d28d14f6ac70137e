"""Where webhooks may go: not into the hub's own network unless the operator says so (server-side request forgery).

A rule's webhook URL is checked when it is saved and again when each delivery is sent, after resolving its host:
every address the name resolves to must be public (not loopback, private, link-local, shared, multicast or
reserved) or listed in HUB_ALERT_WEBHOOK_ALLOW (host names and CIDRs). The delivery then connects to the address
it checked, not to a second resolution of the name, so a name that resolves elsewhere by the time of sending (DNS
rebinding) cannot lead it inside. The host of HUB_ALERT_WEBHOOK_URL, which only whoever deploys the hub can set,
is allowed. Redirects are never followed (httpx's default).
"""

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from django.conf import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(Exception):
    """The URL may not be called; the message says why and which setting would allow it."""


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked URL: `url` names the checked address; `host` goes in the Host header, `sni` in TLS's handshake."""

    url: str
    host: str
    sni: str


def _allowed() -> tuple[set[str], list[Network]]:
    hosts: set[str] = set()
    networks: list[Network] = []
    for entry in settings.HUB_ALERT_WEBHOOK_ALLOW:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.lower())
    if settings.HUB_ALERT_WEBHOOK_URL and (configured := urlsplit(settings.HUB_ALERT_WEBHOOK_URL).hostname):
        hosts.add(configured.lower())
    return hosts, networks


def _parsed(url: str) -> tuple[SplitResult, str]:
    """The URL's parts and its host name (checked present)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("a webhook URL is http:// or https:// with a host")
    return parts, parts.hostname


def _check(host: str, addresses: list[Address]) -> None:
    hosts, networks = _allowed()
    if host.lower() in hosts:
        return
    for address in addresses:
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in networks):
            continue
        if not address.is_global or address.is_multicast:
            raise Refused(
                f"{host} is {address}, an address inside the hub's network (loopback, private, link-local or "
                "reserved); list it in HUB_ALERT_WEBHOOK_ALLOW to allow it"
            )


def _addresses(infos: list[tuple]) -> list[Address]:
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def webhook_url_problem(url: str) -> str | None:
    """Why a rule may not have this webhook URL (resolving its host now), or None."""
    try:
        parts, hostname = _parsed(url)
        try:
            infos = socket.getaddrinfo(hostname, parts.port or 443, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise Refused(f"cannot resolve {hostname}: {exc}") from None
        _check(hostname, _addresses(infos))
    except Refused as refused:
        return str(refused)
    return None


async def webhook_destination(url: str) -> Destination:
    """Resolve and check the URL's host; the URL to connect to (by the checked address). Raises Refused."""
    parts, hostname = _parsed(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"cannot resolve {hostname}: {exc}") from None
    addresses = _addresses(infos)
    _check(hostname, addresses)
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{literal}:{port}" if userinfo else f"{literal}:{port}"
    host = parts.netloc.rpartition("@")[2]
    return Destination(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), host, hostname)
