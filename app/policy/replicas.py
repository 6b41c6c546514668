"""Policy replica URLs, with DNS names expanded: `dns+http://name:port/v1` stands for one URL per address
`name` resolves to — a Kubernetes headless Service resolves to every ready pod — so the replicas need
not be listed by hand. Other URLs are kept as written (one server, or a load-balanced Service).

The resolver is a parameter (`resolve_addresses`, the system's `getaddrinfo`, by default) so that a
long-lived process can resolve again while it runs (app/policy/replica_pool.py) and tests can stand in
for a DNS server they cannot change."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

DNS_PREFIX = "dns+"

log = logging.getLogger(__name__)


class ReplicaResolutionError(ValueError):
    """A `dns+` replica name did not resolve to any address."""


# (host name, port) → the addresses it resolves to now; raises OSError when it does not resolve.
Resolver = Callable[[str, int], list[str]]


def resolve_addresses(hostname: str, port: int) -> list[str]:
    """The system resolver (hosts file, DNS): blocking."""
    return [str(info[4][0]) for info in socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)]


def _host(address: str) -> str:
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def expand_replicas(
    urls: Sequence[str], *, strict: bool = True, resolve: Resolver = resolve_addresses
) -> list[str]:
    """Every replica URL, `dns+` names resolved now (blocking: call it off the event loop), each once, in
    the order written with a name's addresses sorted. A name that does not resolve (a headless Service
    with no ready pod yet) raises `ReplicaResolutionError`, or with `strict=False` stays one URL of that
    name, resolved again by every connection: a long-lived process must start while vLLM is down."""
    out: list[str] = []
    for url in urls:
        if not url.startswith(DNS_PREFIX):
            out.append(url)
            continue
        try:
            out += _resolve(url, resolve)
        except ReplicaResolutionError:
            if strict:
                raise
            log.warning("replica name of %s does not resolve now: using it as one URL", url)
            out.append(url.removeprefix(DNS_PREFIX))
    return list(dict.fromkeys(out))


def _resolve(url: str, resolve: Resolver) -> list[str]:
    parts = urlsplit(url.removeprefix(DNS_PREFIX))
    if parts.hostname is None:
        raise ReplicaResolutionError(f"{url}: no host name to resolve")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = resolve(parts.hostname, port)
    except OSError as error:  # socket.gaierror and its kin
        raise ReplicaResolutionError(f"{url}: {parts.hostname} does not resolve: {error}") from error
    addresses = sorted(set(found), key=ipaddress.ip_address)
    if not addresses:
        raise ReplicaResolutionError(f"{url}: {parts.hostname} resolves to no address")
    userinfo = parts.netloc.rpartition("@")[0]
    return [
        urlunsplit(
            (
                parts.scheme,
                f"{userinfo + '@' if userinfo else ''}{_host(address)}:{port}",
                parts.path,
                parts.query,
                "",
            )
        )
        for address in addresses
    ]
