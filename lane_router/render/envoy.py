"""Render a topology as a complete Envoy bootstrap: one outbound listener that routes by lane.

How a request finds its version (details and the reasons in ``envoy/README.md``):

* A Lua filter (``lane_router/data/lanes.lua``) applies design.md's extract order exactly and
  rewrites the routing header to the request's lane (removing it when there is none), so the
  routes need only exact header matches, and the next hop sees the lane even when it came from
  baggage. No route carries a regex; the runtime still raises RE2's program-size limit.
* One virtual host per service (short, namespaced and cluster-local names, with and without the
  port); per declared lane whose answer differs from the baseline's one exact-match route, then
  the baseline default. A strict miss is a direct 503 naming the lane and the service.
* A service with a canary: every declared lane gets its routes (the lanes served by the baseline
  too, so lane traffic never reaches the canary), then the canary's content matches, then the
  default route split by ``weighted_clusters``; the canary's target falls back to the baseline.
* One cluster per (service, lane) version. Where a lane's walk has fallbacks, the route targets
  an aggregate cluster over the walk's versions in order: Envoy sends to the first with a healthy
  endpoint. Passive health (one local-origin failure ejects a host), retries (on connect
  failure; on reset too for idempotent methods, RFC 9110 9.2.2), health changes delivered
  without Envoy's 1 s merge window and no partial-health spill-over make a stopped version fail
  over without an error (an active TCP health check is optional).

Everything Envoy answers by itself is JSON (``local_reply_config``). The result is a plain dict
built in a fixed order from the (sorted) topology: the same input gives byte-identical output.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from functools import partial
from importlib import resources
from typing import Any

from lane_router._address import split_hostport
from lane_router._topology import (
    STRICT_MISS_STATUS,
    Canary,
    ContentMatch,
    Endpoint,
    Topology,
)

__all__ = [
    "LISTENER_NAME",
    "LUA_FILTER",
    "RE2_MAX_PROGRAM_SIZE",
    "ROUTE_CONFIG_NAME",
    "bootstrap_shell",
    "cluster_name",
    "clusters",
    "lua_source",
    "render_envoy",
    "route_config",
    "service_names",
]

LISTENER_NAME = "lanes_outbound"
ROUTE_CONFIG_NAME = "lanes"
RE2_MAX_PROGRAM_SIZE = 32768  # Istio's proxies use the same
# RFC 9110 9.2.2: requests of these methods may be sent again after the upstream reset them
# mid-exchange; any other (POST, PATCH, ...) only when nothing reached the upstream.
_IDEMPOTENT_METHODS = "GET|HEAD|OPTIONS|TRACE|PUT|DELETE"
_RETRY_ON_IDEMPOTENT = "connect-failure,refused-stream,reset"
_RETRY_ON_OTHER = "connect-failure,refused-stream,reset-before-request"
_METADATA_NS = "traffic_lanes"
_NO_SPILLOVER = 1_000_000  # overprovisioning factor, in %: 1 healthy endpoint of 10,000 is "100%"
_TYPE_URL = "type.googleapis.com/envoy."


def _typed(type_name: str, **fields: Any) -> dict[str, Any]:
    """A ``typed_config`` Any of ``envoy.<type_name>``."""
    return {"@type": _TYPE_URL + type_name, **fields}


def _load_lua() -> str:
    return resources.files("lane_router").joinpath("data/lanes.lua").read_text(encoding="utf-8")


LUA_FILTER: str = _load_lua()
"""The lane filter's Lua source as shipped (defaults: ``x-lane``, baggage key ``lane``)."""


def cluster_name(service: str, lanes: tuple[str, ...] | str) -> str:
    """``reviews|feature-a`` for a version; ``reviews|feature-b>feature-a>baseline`` for a walk."""
    if isinstance(lanes, str):
        return f"{service}|{lanes}"
    return f"{service}|{'>'.join(lanes)}"


def _lua_string(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\' or code < 32 or code > 126:
            out.append(f"\\{code:03d}" if code < 256 else "?")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _compact(lua: str) -> str:
    """The filter without its comment lines and blank lines (the rules live in the file)."""
    kept = (
        line for line in lua.splitlines() if line.strip() and not line.lstrip().startswith("--")
    )
    return "\n".join(kept) + "\n"


_LUA_COMPACT = _compact(LUA_FILTER)


def lua_source(topology: Topology) -> str:
    """The Lua filter as embedded: bound to the topology's routing header and baggage key,
    comments left in ``envoy/lanes.lua`` (same code)."""
    preamble = (
        "-- traffic-lanes lane filter; commented source: envoy/lanes.lua\n"
        f"local LANES_HEADER, LANES_BAGGAGE_KEY = "
        f"{_lua_string(topology.header)}, {_lua_string(topology.baggage_key)}\n"
    )
    return preamble + _LUA_COMPACT


def _socket_address(text: str, what: str) -> dict[str, Any]:
    """``host:port`` / ``[v6]:port`` with an IP literal; port 0 lets the kernel choose."""
    try:
        host, port = split_hostport(text, port_zero=True)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what}: {text!r}: {host!r} is not an IP address") from None
    return {"socket_address": {"address": str(ip), "port_value": port}}


def _duration(seconds: float) -> str:
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _domains(topology: Topology, service: str) -> list[str]:
    port = topology.services[service].port
    return [d for name in topology.host_names(service) for d in (name, f"{name}:{port}")]


def _retry_policy(attempts: int, *, replay: bool) -> dict[str, Any]:
    # Retries are the failover path, not a reliability feature for application errors: only
    # failures Envoy itself sees before any response are retried, and a request the upstream may
    # have acted on (reset after it was sent) only when its method is idempotent.
    return {
        "retry_on": _RETRY_ON_IDEMPOTENT if replay else _RETRY_ON_OTHER,
        "num_retries": attempts,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": _typed(
                    "extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                ),
            }
        ],
        "host_selection_retry_max_attempts": 5,
    }


def _string_match(kind: str, value: str) -> dict[str, Any]:
    """A canary condition as Envoy's StringMatcher (regexes are full matches in both)."""
    return {"safe_regex": {"regex": value}} if kind == "regex" else {kind: value}


def _path_match(uri: tuple[str, str] | None) -> dict[str, Any]:
    # Envoy's path, prefix and safe_regex route matches all see the path without its query
    # (prefix too: a canary prefix holds no '?', so it cannot reach into the query).
    if uri is None:
        return {"prefix": "/"}
    kind, value = uri
    if kind == "exact":
        return {"path": value}
    if kind == "prefix":
        return {"prefix": value}
    return {"safe_regex": {"regex": value}}


def _lane_match(topology: Topology, lane: str) -> dict[str, Any]:
    return {"prefix": "/", "headers": [_header(topology.header, "exact", lane)]}


def _header(name: str, kind: str, value: str) -> dict[str, Any]:
    return {"name": name, "string_match": _string_match(kind, value)}


def _content_match(match: ContentMatch) -> dict[str, Any]:
    out = _path_match(match.uri)
    if match.headers:
        out["headers"] = [_header(name, kind, value) for name, kind, value in match.headers]
    return out


def _route(
    service: str, name: str, match: dict[str, Any], action: dict[str, Any]
) -> dict[str, Any]:
    return {"name": f"{service}/{name}", "match": match, **action}


def _attempts(topology: Topology, service: str, candidates: tuple[str, ...]) -> int:
    # Enough attempts to try every endpoint of every version before the last one once (a dead
    # endpoint costs one attempt until its ejection reaches the load balancer), plus one.
    versions = topology.services[service].versions
    return max(2, sum(len(versions[v]) for v in candidates[:-1]) + 1)


def _forward(
    topology: Topology,
    service: str,
    targets: tuple[tuple[tuple[str, ...], int], ...],
    *,
    replay: bool,
) -> dict[str, Any]:
    """To one walk's cluster, or split by weight over several (``(walk, weight)`` pairs)."""
    attempts = max(_attempts(topology, service, walk) for walk, _ in targets)
    route: dict[str, Any] = {}
    if len(targets) == 1:
        route["cluster"] = cluster_name(service, targets[0][0])
    else:
        route["weighted_clusters"] = {
            "clusters": [
                {"name": cluster_name(service, walk), "weight": weight} for walk, weight in targets
            ]
        }
    # The sidecar's limits: 5 minutes for a whole exchange, 1 minute of silence (Envoy's
    # default, 15 s for the whole response, cuts downloads and long polls short).
    route["timeout"] = "300s"
    route["idle_timeout"] = "60s"
    route["retry_policy"] = _retry_policy(attempts, replay=replay)
    return {"route": route}


def _forwarding_routes(
    topology: Topology,
    service: str,
    name: str,
    match: Callable[[], dict[str, Any]],
    targets: tuple[tuple[tuple[str, ...], int], ...],
) -> list[dict[str, Any]]:
    """Two routes to the same target: idempotent methods, replayed after a reset; the rest.

    ``match`` makes a fresh dict per route: no object is shared, so a YAML dump has no aliases.
    """
    replay_match = match()
    replay_match.setdefault("headers", []).append(_header(":method", "regex", _IDEMPOTENT_METHODS))
    return [
        _route(service, name, replay_match, _forward(topology, service, targets, replay=True)),
        _route(
            service,
            f"{name}/no-replay",
            match(),
            _forward(topology, service, targets, replay=False),
        ),
    ]


def _canary_walk(topology: Topology, canary: Canary) -> tuple[str, ...]:
    """The canary version, then the baseline when the canary has no healthy endpoint."""
    return (canary.version, topology.baseline)


def _active(canary: Canary | None) -> bool:
    """Whether the canary can take any request (weight 0 and no match: it takes none)."""
    return canary is not None and (canary.weight > 0 or bool(canary.matches))


def _virtual_host(topology: Topology, service: str) -> dict[str, Any]:
    table = topology.routes[service]
    default = table[topology.baseline]
    canary = default.canary if _active(default.canary) else None
    routes: list[dict[str, Any]] = []
    for lane in topology.lanes:
        res = table[lane]
        if res.strict_miss:
            action = {
                "direct_response": {
                    "status": STRICT_MISS_STATUS,
                    "body": {"inline_string": res.miss_detail},  # "error" in the JSON reply
                }
            }
            routes.append(_route(service, lane, _lane_match(topology, lane), action))
        # A lane served like the baseline needs no route of its own, unless the baseline has a
        # canary: lane traffic, fallback to the baseline included, never reaches a canary.
        elif res.candidates != default.candidates or canary is not None:
            routes += _forwarding_routes(
                topology,
                service,
                lane,
                partial(_lane_match, topology, lane),
                ((res.candidates, 100),),
            )
    baseline_target: tuple[tuple[tuple[str, ...], int], ...] = ((default.candidates, 100),)
    if canary is not None:
        # Past the lane routes only baseline requests remain: no lane, an invalid one (the Lua
        # filter removed it) or an undeclared one. Content matches first, then the weight.
        walk = _canary_walk(topology, canary)
        for i, match in enumerate(canary.matches):
            routes += _forwarding_routes(
                topology,
                service,
                f"{canary.version}/match-{i}",
                partial(_content_match, match),
                ((walk, 100),),
            )
        if canary.weight >= 100:
            baseline_target = ((walk, 100),)
        elif canary.weight > 0:
            baseline_target = ((default.candidates, 100 - canary.weight), (walk, canary.weight))
    routes += _forwarding_routes(
        topology, service, topology.baseline, lambda: {"prefix": "/"}, baseline_target
    )
    return {
        "name": service,
        "domains": _domains(topology, service),
        "routes": routes,
        "metadata": {"filter_metadata": {_METADATA_NS: {"service": service}}},
    }


def _endpoint(ep: Endpoint) -> dict[str, Any]:
    return {
        "endpoint": {"address": {"socket_address": {"address": ep.host, "port_value": ep.port}}}
    }


def _version_cluster(
    service: str,
    lane: str,
    endpoints: tuple[Endpoint, ...],
    *,
    connect_timeout: float,
    health_check_interval: float | None,
) -> dict[str, Any]:
    name = cluster_name(service, lane)
    by_name = any(not _is_ip(ep.host) for ep in endpoints)
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STRICT_DNS" if by_name else "STATIC",
        "connect_timeout": _duration(connect_timeout),
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [_endpoint(ep) for ep in endpoints]}],
            # A version with any healthy endpoint takes all of its lane's traffic: no spill-over
            # to the next lane of the walk at partial health (Envoy's default factor, 1.4, sent
            # 30% of a lane's requests to the baseline when one of its two endpoints was down).
            "policy": {"overprovisioning_factor": _NO_SPILLOVER},
        },
        # Passive health: one connection failure, timeout or reset (local origin) ejects the
        # host at once; the application's own 5xx never does (a lane that answers 500 must not
        # silently turn into the baseline for QA).
        "outlier_detection": {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 1,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "enforcing_local_origin_success_rate": 0,
            "enforcing_failure_percentage": 0,
            "enforcing_failure_percentage_local_origin": 0,
            "interval": "1s",
            "base_ejection_time": "5s",
            "max_ejection_time": "60s",
            "max_ejection_percent": 100,
        },
        # The retries are the failover: allow as many concurrent ones as requests.
        "circuit_breakers": {"thresholds": [{"max_retries": 1024}]},
        # Deliver every health change at once. Envoy merges the updates of one second by
        # default: the second ejection of a two-endpoint lane then reached the aggregate
        # cluster up to 1 s late, and requests in between failed (measured).
        "common_lb_config": {"update_merge_window": "0s"},
    }
    if health_check_interval is not None:
        # Active TCP connect check: finds a stopped version before traffic does, and brings a
        # restarted one back within one interval (passive ejection alone waits 5 s and more).
        cluster["health_checks"] = [
            {
                "timeout": _duration(min(connect_timeout, health_check_interval)),
                "interval": _duration(health_check_interval),
                "no_traffic_interval": _duration(health_check_interval),
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                "tcp_health_check": {},
            }
        ]
    return cluster


def _aggregate_cluster(service: str, candidates: tuple[str, ...]) -> dict[str, Any]:
    """The walk's versions in order: Envoy serves from the first with a healthy endpoint."""
    return {
        "name": cluster_name(service, candidates),
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": _typed(
                "extensions.clusters.aggregate.v3.ClusterConfig",
                clusters=[cluster_name(service, lane) for lane in candidates],
            ),
        },
        "circuit_breakers": {"thresholds": [{"max_retries": 1024}]},
    }


def clusters(
    topology: Topology,
    services: list[str],
    *,
    connect_timeout: float,
    health_check_interval: float | None,
) -> list[dict[str, Any]]:
    """Every version's cluster, then an aggregate cluster per fallback walk (and canary)."""
    out: list[dict[str, Any]] = []
    for service in services:
        svc = topology.services[service]
        for lane in topology.lanes_of(service):
            out.append(
                _version_cluster(
                    service,
                    lane,
                    svc.versions[lane],
                    connect_timeout=connect_timeout,
                    health_check_interval=health_check_interval,
                )
            )
        canary = svc.canary
        walk_set = {res.candidates for res in topology.routes[service].values()}
        if canary is not None:
            # Rendered even at weight 0 without matches, so a step only changes routes.
            out.append(
                _version_cluster(
                    service,
                    canary.version,
                    svc.versions[canary.version],
                    connect_timeout=connect_timeout,
                    health_check_interval=health_check_interval,
                )
            )
            walk_set.add(_canary_walk(topology, canary))
        walks = sorted(w for w in walk_set if len(w) > 1)
        out.extend(_aggregate_cluster(service, walk) for walk in walks)
    return out


def _local_reply(topology: Topology) -> dict[str, Any]:
    # Every answer Envoy makes itself (no route, no healthy upstream, upstream reset, strict
    # miss) becomes one JSON shape naming the service, the lane and Envoy's reason.
    return {
        "body_format": {
            "json_format": {
                "error": "%LOCAL_REPLY_BODY%",
                "status": "%RESPONSE_CODE%",
                "service": f"%METADATA(VIRTUAL_HOST:{_METADATA_NS}:service)%",
                "host": "%REQ(:AUTHORITY)%",
                "lane": f"%REQ({topology.header})%",
                "reason": "%RESPONSE_CODE_DETAILS%",
                "flags": "%RESPONSE_FLAGS%",
            },
            "content_type": "application/json",
        },
        # Envoy's own "no route" reply has no body: say what a user needs to know.
        "mappers": [
            {
                "filter": {"response_flag_filter": {"flags": ["NR"]}},
                "body": {"inline_string": "no service of this topology matches the Host"},
            }
        ],
    }


def render_envoy(
    topology: Topology,
    *,
    listen: str = "127.0.0.1:15001",
    admin: str | None = "127.0.0.1:15000",
    connect_timeout: float = 1.0,
    health_check_interval: float | None = None,
    node_id: str = "traffic-lanes",
    services: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The Envoy bootstrap (a plain dict, dump it as JSON or YAML) for ``topology``.

    ``listen`` and ``admin`` are ``ip:port`` (``[::1]:15001`` for IPv6, port 0 for a kernel-chosen
    port); ``admin=None`` leaves the admin interface out. ``health_check_interval`` (seconds)
    adds an active TCP health check; without it passive health and retries still fail over.
    ``services`` renders only those services (a workload's outbound dependencies): Envoy's
    memory and start time grow with the number of clusters.
    """
    names = service_names(topology, services)
    bootstrap = bootstrap_shell(
        topology,
        listen=listen,
        admin=admin,
        node_id=node_id,
        routing={"route_config": route_config(topology, names)},
    )
    bootstrap["static_resources"]["clusters"] = clusters(
        topology,
        names,
        connect_timeout=connect_timeout,
        health_check_interval=health_check_interval,
    )
    return bootstrap


def service_names(topology: Topology, services: Iterable[str] | None) -> list[str]:
    """The services to render, in the topology's (sorted) order; unknown names are an error."""
    if services is None:
        return list(topology.services)
    wanted = set(services)
    unknown = sorted(wanted - set(topology.services))
    if unknown:
        raise ValueError(f"services: not in the topology: {', '.join(unknown)}")
    return [s for s in topology.services if s in wanted]


def route_config(topology: Topology, names: list[str]) -> dict[str, Any]:
    """The listener's RouteConfiguration: one virtual host per service."""
    return {
        "name": ROUTE_CONFIG_NAME,
        "virtual_hosts": [_virtual_host(topology, s) for s in names],
    }


def bootstrap_shell(
    topology: Topology,
    *,
    listen: str,
    admin: str | None,
    node_id: str,
    routing: dict[str, Any],
) -> dict[str, Any]:
    """Node, listener (its routes given by ``routing``: ``route_config`` or ``rds``), runtime and
    admin; the caller adds the clusters."""
    hcm = {
        "@type": _TYPE_URL
        + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": LISTENER_NAME,
        "codec_type": "AUTO",
        # curl -0, ab and old health checkers speak HTTP/1.0; a sidecar should serve them.
        "http_protocol_options": {"accept_http_10": True},
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        **routing,
        "http_filters": [
            {
                "name": "envoy.filters.http.lua",
                "typed_config": _typed(
                    "extensions.filters.http.lua.v3.Lua",
                    default_source_code={"inline_string": lua_source(topology)},
                ),
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": _typed("extensions.filters.http.router.v3.Router"),
            },
        ],
        "local_reply_config": _local_reply(topology),
    }
    bootstrap: dict[str, Any] = {
        "node": {"id": node_id, "cluster": node_id},
        "static_resources": {
            "listeners": [
                {
                    "name": LISTENER_NAME,
                    "address": _socket_address(listen, "listen"),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
        },
        "layered_runtime": {
            "layers": [
                {
                    "name": "static",
                    "static_layer": {
                        "re2.max_program_size.error_level": RE2_MAX_PROGRAM_SIZE,
                        "re2.max_program_size.warn_level": RE2_MAX_PROGRAM_SIZE,
                    },
                }
            ]
        },
    }
    if admin is not None:
        bootstrap["admin"] = {"address": _socket_address(admin, "admin")}
    return bootstrap
