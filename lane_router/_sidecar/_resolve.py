"""Endpoints given by DNS name (``reviews-feature-a.shop.svc:9080``, as the controller's sidecar
data plane writes them): resolved in the background, cached, never on a request's path.

One task re-resolves every name of the live endpoints through the system resolver
(``getaddrinfo`` on the loop's executor, so ``/etc/hosts``, search domains and ``ndots`` of a
pod apply): a name that resolves is cached for ``ttl`` seconds and new upstream connections go
to the cached address (a name with several addresses is left to the connect, which tries
each in turn); a name that does not (NXDOMAIN, refused, timed out) is a dead endpoint:
ejected, its idle connections closed, so requests fall back along the lane's walk, until a later
answer brings it back (asked again after ``negative_ttl``). A connection opened before the first
answer resolves the name itself, once. IP literals are not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
from collections.abc import Iterable, MutableMapping

from lane_router._sidecar._table import EndpointState

__all__ = ["Resolver", "is_name"]

log = logging.getLogger("lanes.sidecar")

_LOOKUP_TIMEOUT = 5.0
_PARALLEL = 16  # names resolved at once (each holds an executor thread)


def is_name(host: str) -> bool:
    """True for a DNS name, False for an IPv4/IPv6 literal."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


class Resolver:
    """Keeps ``addresses`` (name -> address) fresh for the endpoints in ``registry``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        registry: MutableMapping[tuple[str, int], EndpointState],
        *,
        ttl: float,
        negative_ttl: float,
    ) -> None:
        self.loop = loop
        self.registry = registry
        self.ttl = max(ttl, 0.05)
        self.negative_ttl = max(negative_ttl, 0.05)
        self.addresses: dict[str, str] = {}  # read by the upstream connect path
        self.dead: dict[str, str] = {}  # name -> why
        self.lookups = 0
        self.failures = 0
        self._due: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def names(self) -> set[str]:
        return {h for h, _ in self.registry if is_name(h)}

    def start(self) -> None:
        """Run the refresh task, once some endpoint is given by name (IP-only: never)."""
        if self._task is None and self.names():
            self._task = self.loop.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def changed(self) -> None:
        """The table was (re)built: resolve new names now; new states of dead names die."""
        for name in self.dead:
            self._kill(name, self._states(name))
        self.start()
        self._wake.set()

    def _states(self, name: str) -> Iterable[EndpointState]:
        return [ep for (h, _), ep in self.registry.items() if h == name]

    def _kill(self, name: str, states: Iterable[EndpointState]) -> None:
        for ep in states:
            ep.ejected_until = math.inf
            ep.close_idle()

    async def _run(self) -> None:
        while True:
            names = self.names()
            for gone in set(self._due) - names:
                self._due.pop(gone, None)
                self.addresses.pop(gone, None)
                self.dead.pop(gone, None)
            now = self.loop.time()
            due = [n for n in names if self._due.get(n, 0.0) <= now]
            for i in range(0, len(due), _PARALLEL):
                await asyncio.gather(*(self._resolve(n) for n in due[i : i + _PARALLEL]))
            self._wake.clear()
            nxt = min(self._due.values(), default=math.inf) - self.loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, min(nxt, 60.0)))

    async def _resolve(self, name: str) -> None:
        self.lookups += 1
        try:
            infos = await asyncio.wait_for(
                self.loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), _LOOKUP_TIMEOUT
            )
            if not infos:
                raise OSError("no address")
        except (OSError, TimeoutError) as exc:
            self.failures += 1
            why = (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__
            self.addresses.pop(name, None)
            self._due[name] = self.loop.time() + self.negative_ttl
            if name not in self.dead:
                log.warning(
                    "endpoint %s: DNS lookup failed (%s): treated as dead, requests fall back "
                    "along the lane's walk; asked again every %.1fs",
                    name,
                    why,
                    self.negative_ttl,
                )
            self.dead[name] = why
            self._kill(name, self._states(name))
            return
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if len(found) == 1:  # a Service's ClusterIP: connect straight to it
            self.addresses[name] = found[0]
        else:  # several (localhost v4+v6, a headless Service): the connect tries them in turn
            self.addresses.pop(name, None)
        self._due[name] = self.loop.time() + self.ttl
        if self.dead.pop(name, None) is not None:
            log.warning("endpoint %s resolves again (%s)", name, ", ".join(found))
            for ep in self._states(name):
                if ep.ejected_until == math.inf:
                    ep.ejected_until = 0.0
                    ep.fails = 0
