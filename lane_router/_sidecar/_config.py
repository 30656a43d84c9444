"""Sidecar settings: one frozen object read by every layer, built by the CLI or a test."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SidecarConfig", "format_hostport", "parse_hostport"]


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` (port 0 = pick a free one). Raises ValueError."""
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise ValueError(f"{text!r}: expected '[ipv6]:port'")
        host, port = text[1:close], text[close + 2 :]
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r}: expected 'host:port'")
        if ":" in host:
            raise ValueError(f"{text!r}: an IPv6 address needs brackets, as '[::1]:15001'")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r}: port must be 0-65535")
    return host, int(port)


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SidecarConfig:
    """Limits and timeouts in bytes and seconds; a timeout of 0 disables it."""

    topology_path: str
    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 15001),)
    admin: tuple[str, int] | None = ("127.0.0.1", 15000)
    admin_server: str = "builtin"  # or "aiohttp"
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0  # nothing from the upstream (nor the client's body) for this long
    request_timeout: float = 300.0  # the whole exchange, headers in to last byte out
    header_timeout: float = 10.0  # slowloris: first byte of a request to the end of its head
    keepalive_timeout: float = 75.0  # an idle client connection is closed after this
    max_header_bytes: int = 65536
    max_connections: int = 10000
    max_hops: int = 16
    hops_header: str = "x-lanes-hops"
    eject_base: float = 5.0  # first ejection of a failing endpoint; doubles per failure
    eject_max: float = 60.0
    max_idle_per_endpoint: int = 256
    reload_interval: float = 1.0  # file poll period; 0 disables (SIGHUP still reloads)
    drain_timeout: float = 30.0

    def timeout(self, value: float) -> float:
        return value if value > 0 else math.inf
