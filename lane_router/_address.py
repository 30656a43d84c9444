"""``host:port`` as every part of the project reads and writes it: IPv6 always in brackets.

One parser for endpoints in ``lanes.yaml``, listen and admin addresses (sidecar, Envoy,
controller), so ``[::1]:9081`` means the same thing everywhere and a bare ``::1:9081`` is the
same clear error everywhere.
"""

from __future__ import annotations

import ipaddress
from typing import Any

__all__ = ["join_hostport", "split_hostport"]


def split_hostport(text: Any, *, port_zero: bool = False) -> tuple[str, int]:
    """``host:port`` or ``[ipv6]:port`` -> ``(host, port)``, the host without brackets.

    ``port_zero`` admits port 0 (a listener: the kernel picks). Raises ValueError naming the
    value; the host is only checked to be an IPv6 literal when bracketed.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected 'host:port', got {type(text).__name__}")
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise ValueError(f"{text!r}: expected '[ipv6]:port'")
        host, port = text[1:close], text[close + 2 :]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r}: expected 'host:port'")
        if ":" in host:
            raise ValueError(f"{text!r}: an IPv6 address needs brackets, as '[::1]:9081'")
    low = 0 if port_zero else 1
    if not port.isdigit() or not low <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port must be {low}-65535")
    return host, int(port)


def join_hostport(host: str, port: int) -> str:
    """The inverse of :func:`split_hostport`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
