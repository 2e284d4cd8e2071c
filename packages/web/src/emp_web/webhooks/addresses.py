"""Which URLs a webhook may be sent to: the SSRF guard.

A URL is refused when its scheme is not https (http only when the operator allows it), when it
carries credentials, or when its host resolves to any address that is not public: loopback,
private, link-local, shared (CGNAT), multicast, reserved, unspecified. Cloud metadata addresses
are refused always; the others may be allowed by network (``EMP_WEBHOOK_ALLOW_NETWORKS``).

The check runs when an endpoint is saved (so the user hears at once) and again before every
attempt, on the addresses the request then connects to (``Target.address``): a name that
resolved to a public address yesterday and to 10.0.0.1 today is refused today, and a rebinding
between the check and the connect cannot happen because the request goes to the checked address.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from urllib.parse import urlsplit

from emp_core.errors import InvalidInput

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

METADATA = frozenset(
    ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
MAX_URL_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL and the address a request to it connects to."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    address: IPAddress

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def pinned_url(self) -> str:
        """The URL with the checked address in place of the name."""
        a = self.address
        host = f"[{a}]" if isinstance(a, IPv6Address) else str(a)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def refusal(address: IPAddress, allow: Sequence[IPNetwork] = ()) -> str | None:
    """Why a request may not go to ``address``, or None when it may."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return "a cloud metadata address"
    if any(address.version == net.version and address in net for net in allow):
        return None
    for test, what in (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    ):
        if test:
            return what
    return None


def parse(url: str, *, allow_http: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of a URL a webhook may name, or ``InvalidInput``."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"a URL has at most {MAX_URL_LENGTH} characters", field="url")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"not a URL: {exc}", field="url") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise InvalidInput(f"the URL must start with {' or '.join(schemes)}://", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("the URL may not hold a user name or password", field="url")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidInput("the URL has no host", field="url")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(f"{host} does not resolve: {exc}", field="url") from None
    # The scope of a link-local IPv6 address ("%eth0") is dropped: such an address is refused.
    return list(dict.fromkeys(ip_address(str(info[4][0]).split("%")[0]) for info in infos))


async def check(
    url: str, *, allow_networks: Sequence[IPNetwork] = (), allow_http: bool = False
) -> Target:
    """The target of ``url`` if every address its host resolves to is allowed, else
    ``InvalidInput`` naming the field ``url``."""
    scheme, host, port, path = parse(url, allow_http=allow_http)
    addresses = await resolve(host, port)
    if not addresses:
        raise InvalidInput(f"{host} does not resolve", field="url")
    for address in addresses:
        if (why := refusal(address, allow_networks)) is not None:
            raise InvalidInput(
                f"webhooks may not be sent to {host}: it resolves to {why} ({address})",
                field="url",
            )
    return Target(url.strip(), scheme, host, port, path, addresses[0])
