"""The back-references of the data path, as small ``typing.Protocol`` s.

Objects of the sidecar point back at their owners (an exchange at its client connection and
the process, an upstream connection at its exchange). Typing those references with the
concrete classes made the modules import each other in a circle; typed by these protocols,
the imports run one way only:

``_http, _config, _metrics -> _table -> _decide, _ports -> _upstream -> _exchange ->
_downstream -> _server`` (``_admin`` reads the process through :class:`AdminView`).

This module imports only data modules (never a protocol class), so any module may import it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from lane_router._sidecar._decide import RequestHead
from lane_router._sidecar._edge import Edge
from lane_router._sidecar._metrics import Metrics
from lane_router._sidecar._table import EndpointState, RouteTable

__all__ = ["AdminView", "Client", "ExchangeSink", "Proxy", "Upstream"]


class Client(Protocol):
    """A client connection, as its exchanges and the process see it."""

    transport: Any
    closed: bool
    eof: bool

    def block(self, bit: int) -> None: ...

    def unblock(self, bit: int) -> None: ...
    def exchange_done(self, ex: Any, now: float) -> None: ...
    def tick(self, now: float) -> None: ...
    def idle(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class Proxy(Protocol):
    """The process (:class:`Sidecar`), as the data path sees it: plain attributes, read hot."""

    loop: asyncio.AbstractEventLoop
    metrics: Metrics
    table: RouteTable
    connections: set[Client]
    draining: bool
    connect_timeout: float
    idle_timeout: float
    request_timeout: float
    header_timeout: float
    keepalive_timeout: float
    max_header_bytes: int
    max_headers: int
    max_connections: int
    max_hops: int
    hops_header: str
    hops_line: list[bytes]
    edge: Edge | None
    resolved: dict[str, str]  # endpoint name -> cached address (empty without names)

    def eject(self, ep: EndpointState, now: float, detail: str) -> None: ...
    def release(self, up: Upstream) -> None: ...
    def drained(self) -> None: ...


class AdminView(Protocol):
    """What the admin port reads of the process."""

    loop: asyncio.AbstractEventLoop
    metrics: Metrics
    table: RouteTable
    connections: set[Client]
    draining: bool
    listen_addrs: list[str]
    admin_addr: str | None
    edge: Edge | None

    @property
    def ready(self) -> bool: ...


class Upstream(Protocol):
    """An upstream connection, as an exchange and the pool see it."""

    ep: EndpointState
    transport: Any
    closed: bool
    eof: bool
    reused: bool
    got_bytes: bool
    headers: list[bytes]
    reason: bytes
    upgrade: bytes | None
    conn_tokens: list[bytes] | None
    has_cl: bool
    out: list[bytes]
    ex: ExchangeSink | None
    parser: Any

    def begin(self, ex: ExchangeSink, reused: bool) -> None: ...
    def throttle(self, pause: bool) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class ExchangeSink(Protocol):
    """An exchange, as its upstream connection sees it."""

    conn: Client
    req: RequestHead
    touched: bool
    chunk_out: bool

    @property
    def is_head(self) -> bool: ...

    def response_head(self, up: Upstream, status: int) -> None: ...
    def response_complete(self, up: Upstream, reusable: bool | None = None) -> None: ...
    def upstream_lost(self, up: Upstream, exc: Exception | None) -> None: ...
    def upstream_bad(self, detail: str) -> None: ...
    def tunnel_open(self, up: Upstream) -> None: ...
    def tunnel_closed(self) -> None: ...
    def tunnel_eof(self, from_client: bool) -> bool | None: ...
    def internal(self, exc: BaseException) -> None: ...
