"""The sidecar process: listeners, the live table and its reloads, timers, signals, drain."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import socket
from typing import Any

from lane_router._document import load_topology
from lane_router._sidecar._config import SidecarConfig, format_hostport
from lane_router._sidecar._downstream import ClientConnection
from lane_router._sidecar._edge import Edge
from lane_router._sidecar._metrics import Metrics
from lane_router._sidecar._ports import Client, Upstream
from lane_router._sidecar._resolve import Resolver
from lane_router._sidecar._table import EndpointState, RouteTable, forget_unused
from lane_router._topology import TopologyError

__all__ = ["Sidecar"]

log = logging.getLogger("lanes.sidecar")


def _finite(value: float) -> float:
    return value if value > 0 else math.inf


class Sidecar:
    """Per-process state. The hot path reads plain attributes of this object."""

    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.metrics = Metrics(source=config.service or "")
        self.registry: dict[tuple[str, int], EndpointState] = {}
        self.connections: set[Client] = set()
        self.draining = False
        self.listening = False
        # Limits and timeouts, flattened (0 = off = inf).
        self.connect_timeout = _finite(config.connect_timeout)
        self.idle_timeout = _finite(config.idle_timeout)
        self.request_timeout = _finite(config.request_timeout)
        self.header_timeout = _finite(config.header_timeout)
        self.keepalive_timeout = _finite(config.keepalive_timeout)
        self.max_header_bytes = config.max_header_bytes
        self.max_headers = config.max_headers
        self.max_connections = config.max_connections
        self.max_hops = config.max_hops
        self.hops_header = config.hops_header.lower()
        name = self.hops_header.encode("ascii")
        self.hops_line = [b"%s: %d\r\n" % (name, n + 1) for n in range(config.max_hops + 1)]
        self.listen_addrs: list[str] = []
        self.admin_addr: str | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._admin: Any = None
        self._timers: list[asyncio.TimerHandle] = []
        self._stat_key: tuple[object, ...] | None = None
        self._drained: asyncio.Future[None] | None = None
        self.edge: Edge | None = None
        if config.edge_jwks is not None:
            self.edge = Edge(
                config.edge_jwks,
                issuer=config.edge_issuer,
                audience=config.edge_audience,
                leeway=config.edge_leeway,
                verify_budget=config.edge_verify_budget,
            )
        self.table = self._build(load_topology(config.topology_path), 1)
        self._stat_key = self._stat()
        self.metrics.reloads += 1
        self.resolver = Resolver(
            self.loop, self.registry, ttl=config.dns_ttl, negative_ttl=config.dns_negative_ttl
        )
        self.resolved = self.resolver.addresses

    # -- table ----------------------------------------------------------------------------

    def _build(self, topology: Any, generation: int) -> RouteTable:
        table = RouteTable(
            topology,
            registry=self.registry,
            generation=generation,
            source=self.config.topology_path,
        )
        table.with_hops_header(self.hops_header)
        if self.edge is not None:
            self.edge.install(table.special, topology.baggage_key)
        return table

    def _stat(self) -> tuple[object, ...] | None:
        """What identifies the file's content. ``realpath`` first: a ConfigMap volume's file is
        ``lanes.yaml -> ..data/lanes.yaml`` and kubelet swaps ``..data`` to a new directory by
        an atomic rename, which the final file's mtime alone may not show."""
        path = self.config.topology_path
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (os.path.realpath(path), st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)

    def reload(self, why: str) -> bool:
        """Load the file again; a bad file keeps the live table, says why and is counted."""
        self._stat_key = self._stat()
        if self.edge is not None:
            self.edge.reload()  # the JWKS goes with the topology; a bad one keeps the old keys
        try:
            topology = load_topology(self.config.topology_path)
            table = self._build(topology, self.table.generation + 1)
        except TopologyError as exc:
            self.metrics.reload_failures += 1
            log.error(
                "reload (%s) refused, keeping table generation %d: %s",
                why,
                self.table.generation,
                exc,
            )
            return False
        except Exception:  # a bug in building the table must not take the live one down
            self.metrics.reload_failures += 1
            log.exception("reload (%s) failed, keeping generation %d", why, self.table.generation)
            return False
        self.table = table
        forget_unused(self.registry, (table,))
        self.resolver.changed()
        self.metrics.reloads += 1
        log.info(
            "reload (%s): table generation %d, %d services, %d lanes",
            why,
            table.generation,
            len(topology.services),
            len(topology.all_lanes),
        )
        return True

    def _watch(self) -> None:
        try:
            if self._stat() != self._stat_key and not self.draining:
                self.reload("file changed")
            elif self.edge is not None and self.edge.changed() and not self.draining:
                self.edge.reload()
        except Exception:
            log.exception("file watch failed")
        self._later(self.config.reload_interval, self._watch)

    # -- used by the data path ------------------------------------------------------------

    def eject(self, ep: EndpointState, now: float, detail: str) -> None:
        period = ep.failed(now, self.config.eject_base, self.config.eject_max)
        ep.close_idle()
        self.metrics.ejected(ep.label)
        log.warning("ejected %s for %.1fs: %s", ep.label, period, detail)

    def release(self, up: Upstream) -> None:
        ep = up.ep
        if (
            up.closed
            or self.draining
            or ep.retired
            or len(ep.idle) >= self.config.max_idle_per_endpoint
        ):
            up.close()
        else:
            ep.idle.append(up)

    def drained(self) -> None:
        fut = self._drained
        if fut is not None and not fut.done():
            fut.set_result(None)

    @property
    def ready(self) -> bool:
        return self.listening and not self.draining

    # -- lifecycle ------------------------------------------------------------------------

    def _later(self, delay: float, fn: Any) -> None:
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(self.loop.call_later(delay, fn))

    def _tick(self) -> None:
        now = self.loop.time()
        for conn in list(self.connections):
            try:
                conn.tick(now)
            except Exception:
                self.metrics.internal_errors += 1
                log.exception("internal error in the timer sweep")
                conn.abort()
        self._later(self._tick_interval(), self._tick)

    def _tick_interval(self) -> float:
        timeouts = [
            t
            for t in (
                self.connect_timeout,
                self.idle_timeout,
                self.request_timeout,
                self.header_timeout,
                self.keepalive_timeout,
            )
            if math.isfinite(t)
        ]
        return min(0.5, max(0.02, min(timeouts, default=2.0) / 5))

    async def start(self) -> None:
        for host, port in self.config.listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = await self.loop.create_server(
                lambda: ClientConnection(self),
                host,
                port,
                family=family,
                backlog=2048,
                reuse_address=True,
            )
            self._servers.append(server)
            for sock in server.sockets:
                addr = sock.getsockname()
                self.listen_addrs.append(format_hostport(addr[0], addr[1]))
        if self.config.admin is not None:
            from lane_router._sidecar._admin import start_admin

            self._admin, self.admin_addr = await start_admin(
                self, *self.config.admin, server=self.config.admin_server
            )
        self._later(self._tick_interval(), self._tick)
        self.resolver.start()
        if self.config.reload_interval > 0:
            self._later(self.config.reload_interval, self._watch)
        self.listening = True
        log.info(
            "listening on %s (admin %s), table generation %d from %s",
            ", ".join(self.listen_addrs),
            self.admin_addr,
            self.table.generation,
            self.config.topology_path,
        )

    async def drain(self) -> int:
        """Stop accepting, finish in-flight requests, close. Returns connections cut short."""
        self.draining = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            if conn.idle():
                conn.close()
        self._drained = self.loop.create_future()
        if self.connections:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(self._drained), _finite(self.config.drain_timeout)
                )
        left = len(self.connections)
        for conn in list(self.connections):
            conn.abort()
        await self.close()
        return left

    async def close(self) -> None:
        await self.resolver.close()
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        for server in self._servers:
            server.close()
        self.listening = False
        for ep in self.registry.values():
            ep.close_idle()
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.cleanup()


async def serve(config: SidecarConfig, *, announce: bool = True) -> int:
    """Run until SIGTERM/SIGINT, then drain. SIGHUP reloads the topology."""
    sidecar = Sidecar(config)
    await sidecar.start()
    loop = sidecar.loop
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: sidecar.reload("SIGHUP"))
    gc.collect()
    gc.freeze()  # startup objects never die: keep them out of every collection
    if announce:
        with contextlib.suppress(OSError):  # nobody listening is no reason to stop
            print(
                f"lanes sidecar ready proxy={','.join(sidecar.listen_addrs)} "
                f"admin={sidecar.admin_addr or '-'}",
                flush=True,
            )
    await stop.wait()
    log.info("draining %d connection(s)", len(sidecar.connections))
    left = await sidecar.drain()
    if left:
        log.warning("drain timeout: %d connection(s) cut", left)
    else:
        log.info("drained, exiting")
    return 0
