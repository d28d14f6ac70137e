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
        for reached in (address, *_embedded_ipv4(address)):
            if any(reached in network for network in networks):
                break
            if not reached.is_global or reached.is_multicast:
                raise Refused(
                    f"{host} is {address}, an address inside the hub's network (loopback, private, link-local or "
                    "reserved); list it in HUB_ALERT_WEBHOOK_ALLOW to allow it"
                )


# IPv6 forms that carry an IPv4 address the packet may end up at: NAT64 (RFC 6052, the well-known and the local-use
# prefix), 6to4 (2002::/16), IPv4-compatible (::/96, deprecated) and IPv4-mapped; Teredo's client address.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address embeds (each is checked as if it were the destination)."""
    if address.version != 6:
        return []
    v6 = ipaddress.IPv6Address(address)
    found = []
    if v6.ipv4_mapped is not None:
        found.append(v6.ipv4_mapped)
    if v6.sixtofour is not None:
        found.append(v6.sixtofour)
    if v6.teredo is not None:
        found.append(v6.teredo[1])  # (server, client): the client is where the packet goes
    if any(v6 in network for network in _NAT64) or (v6 in _COMPATIBLE and int(v6) > 1):
        found.append(ipaddress.IPv4Address(int(v6) & 0xFFFFFFFF))
    return found


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
