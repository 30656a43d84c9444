"""Sidecar settings: one frozen object read by every layer, built by the CLI or a test."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lane_router._address import join_hostport, split_hostport

__all__ = ["SidecarConfig", "format_hostport", "parse_hostport"]


def parse_hostport(text: str) -> tuple[str, int]:
    """A listen or admin address; port 0 lets the kernel pick. Raises ValueError."""
    return split_hostport(text, port_zero=True)


format_hostport = join_hostport


@dataclass(frozen=True, slots=True, kw_only=True)
class SidecarConfig:
    """Limits and timeouts in bytes and seconds; a timeout of 0 disables it."""

    topology_path: str
    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 15001),)
    admin: tuple[str, int] | None = ("127.0.0.1", 15000)
    admin_server: str = "builtin"  # or "aiohttp"
    service: str | None = None  # per-pod sidecar: its callers' service (the `source` label)
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0  # nothing from the upstream (nor the client's body) for this long
    request_timeout: float = 300.0  # the whole exchange, headers in to last byte out
    header_timeout: float = 10.0  # slowloris: first byte of a request to the end of its head
    keepalive_timeout: float = 75.0  # an idle client connection is closed after this
    max_header_bytes: int = 65536  # the head, and separately the trailers of a chunked body
    max_headers: int = 100  # field lines in a head (or in trailers); 431 above
    max_connections: int = 10000
    max_hops: int = 16
    hops_header: str = "x-lanes-hops"
    eject_base: float = 5.0  # first ejection of a failing endpoint; doubles per failure
    eject_max: float = 60.0
    max_idle_per_endpoint: int = 256
    reload_interval: float = 1.0  # file poll period; 0 disables (SIGHUP still reloads)
    dns_ttl: float = 5.0  # endpoints given by name: how long an answer is used
    dns_negative_ttl: float = 1.0  # a failed lookup (NXDOMAIN, refused): when to ask again
    drain_timeout: float = 30.0
    # The edge (docs/design.md): with a JWKS, client lane headers are stripped and the lane
    # comes only from a verified lane token.
    edge_jwks: str | None = None
    edge_issuer: str = "traffic-lanes"
    edge_audience: str = "lanes-edge"
    edge_leeway: float = 60.0
    edge_verify_budget: int = 200  # signature checks per second; 0: unlimited

    def timeout(self, value: float) -> float:
        return value if value > 0 else math.inf
