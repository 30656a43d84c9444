"""The live routing table: the routing core's decisions joined with endpoint health and pools.

Built once per topology load. The decision itself (which lanes serve a service, in which order)
is :attr:`Topology.routes`, untouched; this module only adds what a data path needs on top of
it: Host names, endpoint round robin, passive health, idle upstream connections, and bounded
caches from raw header bytes to the validated lane (the rules stay in ``lanes_sdk.wire``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol

from lane_router._sidecar._http import H_HOPS, H_LANE, REQUEST_HEADERS
from lane_router._topology import Canary, Endpoint, Topology
from lanes_sdk.wire import lane_from_baggage, lane_from_headers, valid_lane

__all__ = [
    "CanaryRoute",
    "EndpointState",
    "Pool",
    "Pooled",
    "Route",
    "RouteTable",
    "forget_unused",
]

_CACHE_MAX = 4096
# Longest raw value worth a cache entry (checked before caching, so a client cannot fill the
# caches with long keys): a host name is at most 253 + ":65535", a lane a 63-byte label.
_HOST_KEY_MAX = 300
_LANE_KEY_MAX = 64
_BAGGAGE_KEY_MAX = 256


class Pooled(Protocol):
    """What a pool needs from an idle upstream connection (the upstream module's class)."""

    closed: bool

    def close(self) -> None: ...


class EndpointState:
    """One upstream address: its idle keep-alive connections and its passive health."""

    __slots__ = (
        "ejected_until",
        "ejections",
        "endpoint",
        "fails",
        "host",
        "idle",
        "label",
        "port",
        "retired",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.host = endpoint.host
        self.port = endpoint.port
        self.label = str(endpoint)
        self.idle: list[Pooled] = []
        self.ejected_until = 0.0
        self.fails = 0
        self.ejections = 0
        self.retired = False  # no longer in the topology: connections are closed, not pooled

    def failed(self, now: float, base: float, cap: float) -> float:
        """Eject for ``base`` seconds, doubling with each consecutive failure up to ``cap``."""
        self.fails += 1
        self.ejections += 1
        period = min(base * (2 ** min(self.fails - 1, 30)), cap)
        self.ejected_until = now + period
        return period

    def healthy(self, now: float) -> bool:
        return self.ejected_until <= now

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class Pool:
    """The endpoints of one (service, lane) version, served round robin."""

    __slots__ = ("endpoints", "lane", "rr", "service")

    def __init__(self, service: str, lane: str, endpoints: list[EndpointState]) -> None:
        self.service = service
        self.lane = lane
        self.endpoints = endpoints
        self.rr = 0

    def pick(self, now: float, tried: list[EndpointState] | None) -> EndpointState | None:
        eps = self.endpoints
        n = len(eps)
        rr = self.rr
        for i in range(n):
            ep = eps[(rr + i) % n]
            if ep.ejected_until <= now and (tried is None or ep not in tried):
                self.rr = rr + i + 1
                return ep
        return None


class Route:
    """Where requests of one effective lane to one service go: pools in fallback order.

    ``canary`` is set only on a service's baseline route when the service has a canary, so a
    request to any other route pays one attribute check for canaries.
    """

    __slots__ = ("canary", "lane", "pools", "service")

    def __init__(
        self,
        service: str,
        lane: str,
        pools: tuple[Pool, ...],
        canary: CanaryRoute | None = None,
    ) -> None:
        self.service = service
        self.lane = lane
        self.pools = pools
        self.canary = canary

    def pick(
        self, now: float, tried: list[EndpointState] | None
    ) -> tuple[Pool, EndpointState] | None:
        """The endpoint to use: the first pool (fallback order) with a healthy endpoint not
        yet tried, round robin inside it; with none healthy, the first untried ejected one
        (Envoy's panic mode: a recovered upstream is used at once). None when all were tried.
        """
        for pool in self.pools:
            ep = pool.pick(now, tried)
            if ep is not None:
                return pool, ep
        for pool in self.pools:
            for ep in pool.endpoints:
                if tried is None or ep not in tried:
                    return pool, ep
        return None


class CanaryRoute:
    """A baseline route's canary: the decision is :meth:`Canary.takes`, the core's, untouched
    (``_decide`` calls it).

    ``route`` serves the canary's share: the canary version first, then the baseline's own
    candidates (a canary without a healthy endpoint falls back to the baseline, no error).
    ``needs`` are the header names the content matches read (empty: weight only, and the
    request's headers are never looked at).
    """

    __slots__ = ("canary", "needs", "route", "weight")

    def __init__(self, canary: Canary, route: Route) -> None:
        self.canary = canary
        self.weight = canary.weight
        self.route = route
        self.needs = frozenset(
            name.encode("ascii") for m in canary.matches for name, _, _ in m.headers
        )


class RouteTable:
    """Everything the hot path reads, swapped as a whole on reload."""

    def __init__(
        self,
        topology: Topology,
        *,
        registry: dict[tuple[str, int], EndpointState],
        generation: int = 1,
        source: str = "",
    ) -> None:
        self.topology = topology
        self.generation = generation
        self.source = source
        self.baseline = topology.baseline
        self._effective = topology.effective_lane
        self.baggage_key = topology.baggage_key
        self.header = topology.header.encode("ascii")
        self.special: dict[bytes, int] = dict(REQUEST_HEADERS)
        self.special[self.header] = H_LANE
        self.hosts: dict[str, str] = {}
        self.routes: dict[str, dict[str, Route]] = {}
        self.endpoints: dict[tuple[str, int], EndpointState] = {}
        self._host_cache: dict[bytes, str | None] = {}
        self._lane_cache: dict[bytes, str | None] = {}
        self._baggage_cache: dict[bytes, str | None] = {}
        for sname, svc in topology.services.items():
            for name in topology.host_names(sname):  # any port: the sidecar listens on one
                self.hosts[name] = sname
            pools: dict[str, Pool] = {}
            for lane, eps in svc.versions.items():
                states = []
                for ep in eps:
                    key = (ep.host, ep.port)
                    state = registry.get(key)
                    if state is None:
                        state = registry[key] = EndpointState(ep)
                    self.endpoints[key] = state
                    states.append(state)
                pools[lane] = Pool(sname, lane, states)
            routes: dict[str, Route] = {}
            for lane, res in topology.routes[sname].items():
                route = Route(sname, lane, tuple(pools[c] for c in res.candidates))
                if res.canary is not None:  # only ever the baseline's entry (the core's rule)
                    to_canary = Route(sname, lane, (pools[res.canary.version], *route.pools))
                    route.canary = CanaryRoute(res.canary, to_canary)
                routes[lane] = route
            self.routes[sname] = routes

    def route_info(self) -> list[tuple[str, str, str]]:
        """(service, lane, serving lane) per route, sorted; "" where a strict lane stops."""
        return [
            (sname, lane, route.pools[0].lane if route.pools else "")
            for sname, routes in sorted(self.routes.items())
            for lane, route in sorted(routes.items())
        ]

    def with_hops_header(self, name: str) -> None:
        self.special[name.encode("ascii").lower()] = H_HOPS

    # -- hot path -------------------------------------------------------------------------

    def service_for_host(self, raw: bytes) -> str | None:
        """The service a Host value (or an absolute-form authority) names, or None."""
        if len(raw) > _HOST_KEY_MAX:
            return None
        cache = self._host_cache
        try:
            return cache[raw]
        except KeyError:
            pass
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        svc = cache[raw] = self._parse_host(raw)
        return svc

    def _parse_host(self, raw: bytes) -> str | None:
        try:
            text = raw.decode("ascii").strip(" \t").lower()
        except UnicodeDecodeError:
            return None
        if text.startswith("["):  # an IP literal never names a service
            return None
        name, _, port = text.partition(":")
        if port and not port.isdigit():
            return None
        return self.hosts.get(name[:-1] if name.endswith(".") else name)

    def lane_of(self, values: list[bytes] | None, baggage: list[bytes] | None) -> str | None:
        """The request's lane per design.md's extract order (header, then baggage)."""
        if values:
            if len(values) == 1:
                raw = values[0]
                cache = self._lane_cache
                try:
                    lane = cache[raw]
                except KeyError:
                    if len(raw) > _LANE_KEY_MAX:
                        lane = valid_lane(raw)  # (never valid: no entry for it)
                    else:
                        if len(cache) >= _CACHE_MAX:
                            cache.clear()
                        lane = cache[raw] = valid_lane(raw)
            else:
                lane = lane_from_headers(values, (), baggage_key=self.baggage_key)
            if lane is not None:
                return lane
        if baggage:
            if len(baggage) == 1:
                raw = baggage[0]
                bcache = self._baggage_cache
                try:
                    lane = bcache[raw]
                except KeyError:
                    if len(raw) > _BAGGAGE_KEY_MAX:
                        lane = lane_from_baggage((raw,), self.baggage_key)
                    else:
                        if len(bcache) >= _CACHE_MAX:
                            bcache.clear()
                        lane = bcache[raw] = lane_from_baggage((raw,), self.baggage_key)
            else:
                lane = lane_from_baggage(baggage, self.baggage_key)
            return lane
        return None

    def route(self, service: str, lane: str | None) -> Route:
        """The route for a request's lane (the core decides what an undeclared lane means)."""
        return self.routes[service][self._effective(lane)]

    # -- admin ----------------------------------------------------------------------------

    def to_json(self, now: float) -> dict[str, Any]:
        topo = self.topology
        services: dict[str, Any] = {}
        for sname in sorted(self.routes):
            lanes: dict[str, Any] = {}
            for lane in topo.all_lanes:
                route = self.routes[sname][lane]
                lanes[lane] = {
                    "candidates": [p.lane for p in route.pools],
                    "serving": route.pools[0].lane if route.pools else None,
                    "strict_miss": not route.pools,
                }
            versions = {}
            for lane, eps in topo.services[sname].versions.items():
                versions[lane] = [
                    _endpoint_json(self.endpoints[(e.host, e.port)], now) for e in eps
                ]
            services[sname] = {
                "hosts": sorted(h for h, s in self.hosts.items() if s == sname),
                "versions": versions,
                "lanes": lanes,
            }
            canary = topo.services[sname].canary
            if canary is not None:
                baseline_route = self.routes[sname][topo.baseline]
                services[sname]["canary"] = {
                    "version": canary.version,
                    "weight": canary.weight,
                    "match": [m.as_dict() for m in canary.matches],
                    "candidates": [p.lane for p in baseline_route.canary.route.pools]
                    if baseline_route.canary is not None
                    else [],
                }
        return {
            "source": self.source,
            "generation": self.generation,
            "header": topo.header,
            "baggageKey": topo.baggage_key,
            "baseline": topo.baseline,
            "lanes": {
                name: {
                    "fallback": None if lane.strict else (lane.fallback or topo.baseline),
                    "strict": lane.strict,
                    "chain": list(topo.chains[name]),
                }
                for name, lane in topo.lanes.items()
            },
            "services": services,
        }


def _endpoint_json(state: EndpointState, now: float) -> dict[str, Any]:
    left = state.ejected_until - now
    return {
        "endpoint": state.label,
        "healthy": left <= 0,
        "ejected_for_s": round(left, 3) if left > 0 and math.isfinite(left) else 0,
        "consecutive_failures": state.fails,
        "idle_connections": len(state.idle),
    }


def forget_unused(
    registry: dict[tuple[str, int], EndpointState], tables: Iterable[RouteTable]
) -> None:
    """Drop (and close the idle connections of) endpoints no live table references."""
    live: set[tuple[str, int]] = set()
    for t in tables:
        live.update(t.endpoints)
    for key in [k for k in registry if k not in live]:
        state = registry.pop(key)
        state.retired = True
        state.close_idle()
