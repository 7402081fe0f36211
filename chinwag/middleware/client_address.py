"""The client's address, as rate limits and logs see it: `X-Forwarded-For` counts only from trusted proxies.

With `CHINWAG_TRUSTED_PROXIES` unset (the default) the peer of the TCP connection is the client, whatever headers
it sends. When the peer is one of the trusted proxies, the client is the right-most address of `X-Forwarded-For`
that is not itself a trusted proxy (each proxy appends the address it saw, so anything left of that was written by
the client and proves nothing). `chinwag serve` gives uvicorn the same list, so its access log agrees.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDRs (`10.0.0.0/8`, `::1`); a bad one raises ValueError naming it."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return tuple(networks)


class TrustedProxies:
    """Which peers may say who the client is."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def trusts(self, host: str | None) -> bool:
        if not host or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The client behind `peer` (a trusted proxy) according to its `X-Forwarded-For`."""
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop if _is_address(hop) else peer
        return hops[0] if hops and _is_address(hops[0]) else peer


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class ClientAddressMiddleware:
    """Sets `scope["client"]` to the real client when the peer is a trusted proxy; outermost, so every later part
    (rate limits, logs) sees the same address."""

    def __init__(self, app: ASGIApp, *, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.proxies.networks:
            peer = scope.get("client")
            if peer is not None and self.proxies.trusts(peer[0]):
                values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
                if values:
                    scope["client"] = (self.proxies.client(peer[0], ",".join(values)), 0)
        await self.app(scope, receive, send)
