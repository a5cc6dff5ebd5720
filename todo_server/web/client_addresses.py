"""Client addresses as the per-address connection cap counts them (``web.http_protocol``).

A client is its connection's peer address, as uvicorn sees it. An IPv6 host
usually holds a whole /64 and may pick any address in it, so IPv6 peers count
per /64; an IPv4 address mapped into IPv6 (a dual-stack listener) counts as the
IPv4 address. Peers in ``TRUSTED_PROXIES`` are not capped: every client behind a
proxy shares its address.
"""

from __future__ import annotations

import functools
import ipaddress

#: An IPv6 client usually holds a whole /64; counted per address, it would have billions.
IPV6_CLIENT_PREFIX = 64


def client_key(host: str) -> str:
    """What connections are counted under for the peer ``host``: an IPv4 address as
    it is (also when mapped into IPv6), an IPv6 address as its /64."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))


@functools.cache
def networks(peers: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """TRUSTED_PROXIES' addresses and networks, parsed once (the settings checked them)."""
    return tuple(ipaddress.ip_network(peer, strict=False) for peer in peers if peer != "*")


def uncapped(host: str, peers: tuple[str, ...]) -> bool:
    """Whether ``host`` is one of ``peers`` (TRUSTED_PROXIES: addresses, networks or ``*``)."""
    if "*" in peers:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks(peers))


class ConnectionCounts:
    """Open connections per client key in one process; keys with none are dropped."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def add(self, key: str) -> int:
        """Count one more connection under ``key``; how many it has now."""
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count

    def remove(self, key: str) -> None:
        """Count one connection under ``key`` out (one that ``add`` counted)."""
        left = self._counts[key] - 1
        if left:
            self._counts[key] = left
        else:
            del self._counts[key]

    def __len__(self) -> int:
        return len(self._counts)
