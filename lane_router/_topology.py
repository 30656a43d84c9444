"""The topology model and the one routing semantics every data plane renders.

A request of lane L to service S walks L, fallback(L), ... to the baseline; the first lane that
deploys S serves it. A strict lane ends the walk: if it does not deploy S the request is a
*strict miss* (503). Everything a renderer, the sidecar or the controller needs is derived from
:meth:`Topology.resolve`, and the whole lane x service table is computed once, at load, so that
a data plane's hot path is two dict lookups.

The model's rules (names, fallbacks, cycles, canaries) are checked here, once, by
:meth:`Topology.build`; reading and writing ``lanes.yaml`` is :mod:`lane_router._document`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lane_router._address import join_hostport
from lanes_sdk.wire import DEFAULT_BAGGAGE_KEY, DEFAULT_BASELINE, DEFAULT_HEADER, valid_lane

__all__ = [
    "DEFAULT_PORT",
    "MATCH_KINDS",
    "STRICT_MISS_REASON",
    "STRICT_MISS_STATUS",
    "Canary",
    "ContentMatch",
    "Endpoint",
    "Lane",
    "Resolution",
    "Service",
    "Topology",
    "TopologyError",
]

DEFAULT_PORT = 80
MATCH_KINDS = ("exact", "prefix", "regex")
# What every data plane answers for a strict miss (Resolution.miss_detail / miss_body say the rest).
STRICT_MISS_STATUS = 503
STRICT_MISS_REASON = "strict miss"
MAX_MATCH_VALUE = 1024  # Istio's regex cap; Gateway API paths allow no more either
_ISTIO_IGNORED_HEADERS = frozenset({"uri", "scheme", "method", "authority"})
# RE2 (Envoy, Istio) has no look-around or back-references; reject them where Python would accept.
_NOT_RE2 = re.compile(r"\(\?[=!<]|\\[1-9]|\(\?P=")
_HEADER_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_BAGGAGE_KEY_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


class TopologyError(ValueError):
    """A topology that cannot be used. ``problems`` lists every fault, each naming its key."""

    def __init__(self, problems: Iterable[str], source: str | None = None) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{where}invalid topology ({len(self.problems)} problem(s)):\n{lines}")


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return join_hostport(self.host, self.port)


@dataclass(frozen=True, slots=True)
class Lane:
    name: str
    fallback: str | None = None  # None: the baseline (or, for the baseline itself, nothing)
    strict: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class ContentMatch:
    """One content match of a canary: every condition must hold (AND); a canary's matches OR.

    ``headers`` are ``(name, kind, value)`` with lower-case names; ``uri`` is ``(kind, value)``
    matched against the path without its query string, as Envoy and Istio do. A header matches
    when any of its field lines does; regexes are full matches (RE2 syntax).
    """

    headers: tuple[tuple[str, str, str], ...] = ()
    uri: tuple[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``lanes.yaml`` form, which is also Istio's HTTPMatchRequest form."""
        entry: dict[str, Any] = {}
        if self.headers:
            entry["headers"] = {name: {kind: value} for name, kind, value in self.headers}
        if self.uri is not None:
            entry["uri"] = {self.uri[0]: self.uri[1]}
        return entry

    def matches(self, header_values: Callable[[str], Iterable[str]], path: str) -> bool:
        if self.uri is not None and not _match_value(self.uri[0], self.uri[1], path):
            return False
        for name, kind, value in self.headers:
            if not any(_match_value(kind, value, v) for v in header_values(name)):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Canary:
    """A new baseline version exposed to baseline traffic only.

    It takes a request only when the request's effective lane is the baseline (lane traffic,
    fallback to the baseline included, never reaches a canary): content matches first, then
    ``weight`` percent of the rest.
    """

    version: str
    weight: int = 0  # percent, 0-100
    matches: tuple[ContentMatch, ...] = ()

    def takes(self, header_values: Callable[[str], Iterable[str]], path: str, roll: float) -> bool:
        """The reference decision; ``roll`` is uniform in [0, 1)."""
        if any(m.matches(header_values, path) for m in self.matches):
            return True
        return roll * 100 < self.weight


def _match_value(kind: str, expected: str, value: str) -> bool:
    if kind == "exact":
        return value == expected
    if kind == "prefix":
        return value.startswith(expected)
    # RE2 over the bytes, one character per byte, as Envoy matches a header value: `.` is
    # one byte, `\\pL` a Latin-1 letter. A value decoded with surrogateescape gets its bytes back.
    return _compiled(expected).fullmatch(value.encode("utf-8", "surrogateescape")) is not None


_REGEX_CACHE: dict[str, Any] = {}
_RE2: list[Any] = []  # [module, options] once a regex is first compiled (loaded on first use)


def _re2() -> tuple[Any, Any]:
    if not _RE2:
        import re2  # google-re2: the RE2 library itself, as Envoy and Istio use it

        options = re2.Options()
        options.log_errors = False  # a bad pattern is a validation problem, not stderr noise
        options.encoding = re2.Options.Encoding.LATIN1
        _RE2[:] = [re2, options]
    return _RE2[0], _RE2[1]


def _compiled(pattern: str) -> Any:
    """The RE2 program of a regex match (as Envoy and Istio run it): linear time on any input
    (``(a+)+b`` is exponential in Python's ``re``), ``\\w``/``\\d`` ASCII, over bytes (the
    pattern's UTF-8, as Envoy reads it from its config). Raises ``re2.error`` if RE2 refuses it."""
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        module, options = _re2()
        compiled = _REGEX_CACHE[pattern] = module.compile(pattern.encode(), options=options)
    return compiled


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    # version -> endpoints (may be empty for Istio). Keys are lanes, plus the canary's version.
    versions: Mapping[str, tuple[Endpoint, ...]]
    port: int = DEFAULT_PORT
    namespace: str | None = None  # None: the topology's namespace
    canary: Canary | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a request of ``lane`` (already made effective) to ``service`` goes.

    ``candidates`` are the lanes along the walk that deploy the service, in order: the first
    serves, the rest take over when it has no healthy endpoint (non-strict walks end with the
    baseline). Empty means a strict miss: ``strict_lane`` is where the walk stopped.
    """

    service: str
    lane: str
    candidates: tuple[str, ...]
    canary: Canary | None = None  # set only where the lane is the baseline and S has a canary
    strict_lane: str | None = None  # the strict lane that ends the walk; None: it reaches baseline

    @property
    def serving(self) -> str | None:
        return self.candidates[0] if self.candidates else None

    @property
    def strict_miss(self) -> bool:
        return not self.candidates

    @property
    def is_fallback(self) -> bool:
        return bool(self.candidates) and self.candidates[0] != self.lane

    @property
    def miss_detail(self) -> str:
        """A strict miss in words, naming the strict lane where the walk stopped (which is not
        the request's lane when that lane falls back into a strict one)."""
        strict = self.strict_lane or self.lane
        if strict == self.lane:
            return f"strict lane {strict} does not deploy {self.service}"
        return (
            f"lane {self.lane} falls back to strict lane {strict}, "
            f"which does not deploy {self.service}"
        )

    def miss_body(self) -> str:
        """The JSON body of a strict miss (compact, one line), as the sidecar and Istio send it:
        ``{"status":503,"reason":"strict miss","service":S,"lane":L,"detail":...}``."""
        # Service and lane names are RFC 1123 labels and the detail is built from them and plain
        # words: nothing here needs a JSON escape, so no encoder runs per route.
        return (
            f'{{"status":{STRICT_MISS_STATUS},"reason":"{STRICT_MISS_REASON}",'
            f'"service":"{self.service}","lane":"{self.lane}","detail":"{self.miss_detail}"}}'
        )


@dataclass(frozen=True, slots=True, eq=False)
class Topology:
    """A validated topology: :meth:`build` makes one (``lane_router.load_topology`` too)."""

    lanes: Mapping[str, Lane]  # declared lanes, sorted, baseline excluded
    services: Mapping[str, Service]  # sorted
    baseline: str = DEFAULT_BASELINE
    header: str = DEFAULT_HEADER
    baggage_key: str = DEFAULT_BAGGAGE_KEY
    namespace: str = "default"
    # Derived at construction: lane -> walk, and service -> lane -> Resolution.
    chains: Mapping[str, tuple[str, ...]] = field(init=False, repr=False)
    routes: Mapping[str, Mapping[str, Resolution]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        chains = {name: self._walk(name) for name in (self.baseline, *self.lanes)}
        stops = {k: (c[-1] if c[-1] != self.baseline else None) for k, c in chains.items()}
        routes: dict[str, Mapping[str, Resolution]] = {}
        for sname, svc in self.services.items():
            per_lane = {}
            for lane, chain in chains.items():
                per_lane[lane] = Resolution(
                    sname,
                    lane,
                    tuple(x for x in chain if x in svc.versions),
                    svc.canary if lane == self.baseline else None,
                    stops[lane],
                )
            routes[sname] = MappingProxyType(per_lane)
        object.__setattr__(self, "chains", MappingProxyType(chains))
        object.__setattr__(self, "routes", MappingProxyType(routes))

    def _walk(self, name: str) -> tuple[str, ...]:
        chain = [name]
        while name != self.baseline:
            lane = self.lanes.get(name)
            if lane is None or lane.strict:
                break
            name = lane.fallback or self.baseline
            if name in chain:  # only reachable by bypassing build(); never loop
                break
            chain.append(name)
        return tuple(chain)

    # -- the semantics -------------------------------------------------------------------

    def effective_lane(self, lane: str | None) -> str:
        """No lane, an invalid lane and an undeclared lane all mean the baseline."""
        if lane is not None and lane in self.lanes:
            return lane
        return self.baseline

    def resolve(self, service: str, lane: str | None) -> Resolution | None:
        """The routing decision for one request; ``None`` when the service is unknown."""
        table = self.routes.get(service)
        if table is None:
            return None
        return table[self.effective_lane(lane)]

    @property
    def all_lanes(self) -> tuple[str, ...]:
        """Every lane name, the baseline first, then the declared lanes sorted."""
        return (self.baseline, *self.lanes)

    def lanes_of(self, service: str) -> tuple[str, ...]:
        """The lanes that deploy a version of ``service``, the baseline first, then sorted."""
        versions = self.services[service].versions
        return tuple(x for x in self.all_lanes if x in versions)

    def namespace_of(self, service: str) -> str:
        return self.services[service].namespace or self.namespace

    def host_names(self, service: str) -> tuple[str, ...]:
        """The names a request may use for ``service`` (``Host`` without the port): short,
        ``name.ns``, ``name.ns.svc`` and the cluster FQDN, last. Every data plane serves these
        (Envoy and the sidecar also with ``:port``; Istio routes the FQDN)."""
        ns = self.namespace_of(service)
        return (
            service,
            f"{service}.{ns}",
            f"{service}.{ns}.svc",
            f"{service}.{ns}.svc.cluster.local",
        )

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        *,
        lanes: Iterable[Lane],
        services: Iterable[Service],
        baseline: str = DEFAULT_BASELINE,
        header: str = DEFAULT_HEADER,
        baggage_key: str = DEFAULT_BAGGAGE_KEY,
        namespace: str = "default",
    ) -> Topology:
        """Validate and build from objects (the controller's path). Raises TopologyError."""
        problems: list[str] = []
        lane_map: dict[str, Lane] = {}
        for lane in lanes:
            if lane.name in lane_map:
                problems.append(f"lanes.{lane.name}: declared twice")
            lane_map[lane.name] = lane
        svc_map: dict[str, Service] = {}
        for svc in services:
            if svc.name in svc_map:
                problems.append(f"services.{svc.name}: declared twice")
            svc_map[svc.name] = svc
        _validate(problems, lane_map, svc_map, baseline, header, baggage_key, namespace)
        if problems:
            raise TopologyError(problems)
        return cls(
            lanes=MappingProxyType({k: lane_map[k] for k in sorted(lane_map)}),
            services=MappingProxyType(
                {
                    k: Service(
                        name=s.name,
                        versions=MappingProxyType(
                            {lane: tuple(s.versions[lane]) for lane in sorted(s.versions)}
                        ),
                        port=s.port,
                        namespace=s.namespace,
                        canary=s.canary,
                    )
                    for k, s in sorted(svc_map.items())
                }
            ),
            baseline=baseline,
            header=header,
            baggage_key=baggage_key,
            namespace=namespace,
        )


# -- validation -------------------------------------------------------------------------


def _validate(
    problems: list[str],
    lanes: Mapping[str, Lane],
    services: Mapping[str, Service],
    baseline: str,
    header: str,
    baggage_key: str,
    namespace: str,
) -> None:
    if valid_lane(baseline) != baseline:
        problems.append(f"baseline: {baseline!r} is not a valid lane name (RFC 1123 label)")
    if not isinstance(header, str) or _HEADER_RE.fullmatch(header) is None:
        problems.append(f"header: {header!r} is not a lower-case HTTP header name")
    if not isinstance(baggage_key, str) or _BAGGAGE_KEY_RE.fullmatch(baggage_key) is None:
        problems.append(f"baggageKey: {baggage_key!r} is not a W3C baggage key")
    if valid_lane(namespace) != namespace:
        problems.append(f"namespace: {namespace!r} is not a valid namespace (RFC 1123 label)")
    for name, lane in lanes.items():
        key = f"lanes.{name}"
        if valid_lane(name) != name:
            problems.append(f"{key}: {name!r} is not a valid lane name (RFC 1123 label)")
        if name == baseline:
            problems.append(f"{key}: the baseline lane is implicit and cannot be declared")
            continue
        if lane.strict and lane.fallback not in (None, baseline):
            problems.append(f"{key}: a strict lane does not fall back, remove 'fallback'")
        fb = lane.fallback
        if fb is not None and fb != baseline and fb not in lanes:
            problems.append(f"{key}.fallback: unknown lane {fb!r}")
    # Cycles: follow each chain; report each cycle once, by its sorted members.
    seen_cycles: set[tuple[str, ...]] = set()
    for start in lanes:
        path: list[str] = []
        step: str | None = start
        while step is not None and step != baseline and step in lanes:
            if step in path:
                cycle = tuple(path[path.index(step) :])
                canon = tuple(sorted(cycle))
                if canon not in seen_cycles:
                    seen_cycles.add(canon)
                    shown = " -> ".join((*cycle, step))
                    problems.append(f"lanes.{cycle[0]}.fallback: fallback cycle {shown}")
                break
            path.append(step)
            lane = lanes[step]
            step = None if lane.strict else (lane.fallback or baseline)
    for sname, svc in services.items():
        key = f"services.{sname}"
        if valid_lane(sname) != sname:
            problems.append(f"{key}: {sname!r} is not a valid service name (RFC 1123 label)")
        if not isinstance(svc.port, int) or isinstance(svc.port, bool) or not 0 < svc.port < 65536:
            problems.append(f"{key}.port: must be 1-65535, got {svc.port!r}")
        if svc.namespace is not None and valid_lane(svc.namespace) != svc.namespace:
            problems.append(f"{key}.namespace: {svc.namespace!r} is not a valid namespace")
        if baseline not in svc.versions:
            problems.append(f"{key}.versions: no {baseline!r} version (every service needs one)")
        canary = svc.canary
        for lane_name in svc.versions:
            if lane_name != baseline and lane_name not in lanes:
                if canary is not None and lane_name == canary.version:
                    continue
                problems.append(f"{key}.versions.{lane_name}: unknown lane {lane_name!r}")
        if canary is not None:
            _validate_canary(problems, f"{key}.canary", canary, svc, lanes, baseline, header)


def _validate_canary(
    problems: list[str],
    key: str,
    canary: Canary,
    svc: Service,
    lanes: Mapping[str, Lane],
    baseline: str,
    header: str,
) -> None:
    version = canary.version
    if version == baseline or version in lanes:
        problems.append(
            f"{key}.version: {version!r} is a lane; a canary exposes a version no lane selects"
        )
    elif valid_lane(version) != version:
        problems.append(f"{key}.version: {version!r} is not a valid version name (RFC 1123 label)")
    elif version not in svc.versions:
        problems.append(f"{key}.version: unknown version {version!r} (add it under versions)")
    w = canary.weight
    if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 100:
        problems.append(f"{key}.weight: must be a whole number 0-100, got {w!r}")
    for i, m in enumerate(canary.matches):
        mkey = f"{key}.match[{i}]"
        if not m.headers and m.uri is None:
            problems.append(f"{mkey}: needs 'headers' or 'uri'")
        conditions = [(f"{mkey}.headers.{n}", k, v) for n, k, v in m.headers]
        if m.uri is not None:
            conditions.append((f"{mkey}.uri", *m.uri))
        for n, _, _ in m.headers:
            if _HEADER_RE.fullmatch(n) is None:
                problems.append(f"{mkey}.headers.{n}: not a lower-case HTTP header name")
            elif n == header:
                problems.append(f"{mkey}.headers.{n}: the lane header selects lanes, not canaries")
            elif n in _ISTIO_IGNORED_HEADERS:
                # Istio drops these keys from a header match: the condition would vanish there.
                problems.append(f"{mkey}.headers.{n}: Istio ignores a header match on {n!r}")
        for ckey, kind, value in conditions:
            if kind not in MATCH_KINDS:
                problems.append(f"{ckey}: unknown match kind {kind!r} (exact, prefix or regex)")
            elif not isinstance(value, str):
                problems.append(f"{ckey}.{kind}: must be a string")
            elif len(value) > MAX_MATCH_VALUE:
                problems.append(f"{ckey}.{kind}: longer than {MAX_MATCH_VALUE} characters")
            elif ckey.endswith(".uri") and kind != "regex" and (value[:1] != "/" or "?" in value):
                # Every data plane matches the path without its query: '/'-less or '?' never match.
                problems.append(f"{ckey}.{kind}: a path starts with '/' and holds no '?'")
            elif kind == "regex":
                if _NOT_RE2.search(value):
                    problems.append(f"{ckey}.regex: look-around and back-references are not RE2")
                    continue
                try:
                    _compiled(value)
                except _re2()[0].error as exc:
                    reason = exc.args[0] if exc.args else exc
                    if isinstance(reason, bytes):
                        reason = reason.decode("utf-8", "replace")
                    problems.append(f"{ckey}.regex: invalid regex (RE2): {reason}")
                    continue
