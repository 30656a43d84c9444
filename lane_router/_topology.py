"""The topology model and the one routing semantics every data plane renders.

A request of lane L to service S walks L, fallback(L), ... to the baseline; the first lane that
deploys S serves it. A strict lane ends the walk: if it does not deploy S the request is a
*strict miss* (503). Everything a renderer, the sidecar or the controller needs is derived from
:meth:`Topology.resolve`, and the whole lane x service table is computed once, at load, so that
a data plane's hot path is two dict lookups.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from lane_router._address import join_hostport, split_hostport
from lanes_sdk.wire import DEFAULT_BAGGAGE_KEY, DEFAULT_BASELINE, DEFAULT_HEADER, valid_lane

__all__ = [
    "MATCH_KINDS",
    "Canary",
    "ContentMatch",
    "Endpoint",
    "Lane",
    "Resolution",
    "Service",
    "Topology",
    "TopologyError",
    "load_topology",
    "parse_endpoint",
]

DEFAULT_PORT = 80
MATCH_KINDS = ("exact", "prefix", "regex")
MAX_MATCH_VALUE = 1024  # Istio's regex cap; Gateway API paths allow no more either
_ISTIO_IGNORED_HEADERS = frozenset({"uri", "scheme", "method", "authority"})
# RE2 (Envoy, Istio) has no look-around or back-references; reject them where Python would accept.
_NOT_RE2 = re.compile(r"\(\?[=!<]|\\[1-9]|\(\?P=")
_HEADER_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_BAGGAGE_KEY_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*"
)


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
    return _compiled(expected).fullmatch(value) is not None


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        compiled = _REGEX_CACHE[pattern] = re.compile(pattern)
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
    baseline). Empty means a strict miss.
    """

    service: str
    lane: str
    candidates: tuple[str, ...]
    canary: Canary | None = None  # set only where the lane is the baseline and S has a canary

    @property
    def serving(self) -> str | None:
        return self.candidates[0] if self.candidates else None

    @property
    def strict_miss(self) -> bool:
        return not self.candidates

    @property
    def is_fallback(self) -> bool:
        return bool(self.candidates) and self.candidates[0] != self.lane


@dataclass(frozen=True, slots=True, eq=False)
class Topology:
    """A validated topology: :meth:`build`, :meth:`from_dict` or :func:`load_topology` make one."""

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
        routes: dict[str, Mapping[str, Resolution]] = {}
        for sname, svc in self.services.items():
            per_lane = {}
            for lane, chain in chains.items():
                per_lane[lane] = Resolution(
                    sname,
                    lane,
                    tuple(x for x in chain if x in svc.versions),
                    svc.canary if lane == self.baseline else None,
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

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> Topology:
        """Validate a parsed ``lanes.yaml`` document. Errors name the key path at fault."""
        return _from_document(data, source=source, marks={})

    @classmethod
    def loads(cls, text: str, *, source: str | None = None) -> Topology:
        return _loads(text, source)

    def to_dict(self) -> dict[str, Any]:
        """The topology as a ``lanes.yaml`` document (sorted, canonical)."""
        lanes: dict[str, Any] = {}
        for name, lane in self.lanes.items():
            spec: dict[str, Any] = {}
            if lane.fallback and lane.fallback != self.baseline:
                spec["fallback"] = lane.fallback
            if lane.strict:
                spec["strict"] = True
            if lane.description:
                spec["description"] = lane.description
            lanes[name] = spec
        services: dict[str, Any] = {}
        for name, svc in self.services.items():
            entry: dict[str, Any] = {"port": svc.port}
            if svc.namespace:
                entry["namespace"] = svc.namespace
            entry["versions"] = {k: [str(e) for e in v] for k, v in svc.versions.items()}
            if svc.canary is not None:
                entry["canary"] = _canary_to_dict(svc.canary)
            services[name] = entry
        return {
            "header": self.header,
            "baggageKey": self.baggage_key,
            "baseline": self.baseline,
            "namespace": self.namespace,
            "lanes": lanes,
            "services": services,
        }


def _canary_to_dict(canary: Canary) -> dict[str, Any]:
    out: dict[str, Any] = {"version": canary.version, "weight": canary.weight}
    if canary.matches:
        out["match"] = [m.as_dict() for m in canary.matches]
    return out


def load_topology(path: str | Path) -> Topology:
    """Read and validate a ``lanes.yaml`` file. Raises TopologyError (also for I/O errors)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError([f"cannot read the file: {exc}"], source) from None
    return _loads(text, source)


def parse_endpoint(text: Any) -> Endpoint:
    """``host:port``, with IPv6 in brackets (``[::1]:9081``). Raises ValueError."""
    host, port = split_hostport(text)
    if ":" not in host and _HOSTNAME_RE.fullmatch(host) is None:
        raise ValueError(f"{text!r}: {host!r} is not a host name or address")
    return Endpoint(host, port)


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
        name: str | None = start
        while name is not None and name != baseline and name in lanes:
            if name in path:
                cycle = tuple(path[path.index(name) :])
                canon = tuple(sorted(cycle))
                if canon not in seen_cycles:
                    seen_cycles.add(canon)
                    shown = " -> ".join((*cycle, name))
                    problems.append(f"lanes.{cycle[0]}.fallback: fallback cycle {shown}")
                break
            path.append(name)
            lane = lanes[name]
            name = None if lane.strict else (lane.fallback or baseline)
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
                try:
                    re.compile(value)
                except re.error as exc:
                    problems.append(f"{ckey}.regex: invalid regex: {exc}")
                    continue
                if _NOT_RE2.search(value):
                    problems.append(
                        f"{ckey}.regex: look-around and back-references are not RE2"
                    )


# -- YAML with line numbers -----------------------------------------------------------------

_TOP_KEYS = ("header", "baggageKey", "baseline", "namespace", "lanes", "services")
_LANE_KEYS = ("fallback", "strict", "description")
_SERVICE_KEYS = ("port", "namespace", "versions", "canary")
_CANARY_KEYS = ("version", "weight", "match")


def _loads(text: str, source: str | None) -> Topology:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError([f"{where}not valid YAML: {problem}"], source) from None
    marks: dict[str, int] = {}
    data = _to_python(node, "", marks) if node is not None else None
    return _from_document(data, source=source, marks=marks)


def _to_python(node: yaml.Node, path: str, marks: dict[str, int], loader: Any = None) -> Any:
    """Construct plain Python from a composed node, recording each key path's line."""
    if loader is None:
        loader = yaml.SafeLoader("")
    marks.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            key = str(knode.value) if isinstance(knode, yaml.ScalarNode) else "?"
            sub = f"{path}.{key}" if path else key
            marks[sub] = knode.start_mark.line + 1
            out[key] = _to_python(vnode, sub, marks, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, f"{path}[{i}]", marks, loader) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _from_document(data: Any, *, source: str | None, marks: Mapping[str, int]) -> Topology:
    problems: list[str] = []

    def fault(key: str, message: str) -> None:
        line = marks.get(key)
        problems.append(f"{key} (line {line}): {message}" if line else f"{key}: {message}")

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TopologyError(["the document must be a mapping with 'lanes' and 'services'"], source)
    for key in data:
        if key not in _TOP_KEYS:
            fault(key, f"unknown key (expected one of {', '.join(_TOP_KEYS)})")

    def text(key: str, default: str) -> str:
        value = data.get(key, default)
        if value is None:
            return default
        if not isinstance(value, str):
            fault(key, f"must be a string, got {type(value).__name__}")
            return default
        return value

    header = text("header", DEFAULT_HEADER)
    baggage_key = text("baggageKey", DEFAULT_BAGGAGE_KEY)
    baseline = text("baseline", DEFAULT_BASELINE)
    namespace = text("namespace", "default")

    lanes: dict[str, Lane] = {}
    raw_lanes = data.get("lanes") or {}
    if not isinstance(raw_lanes, dict):
        fault("lanes", "must be a mapping of lane name to {fallback, strict}")
        raw_lanes = {}
    for name, spec in raw_lanes.items():
        key = f"lanes.{name}"
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            fault(key, "must be a mapping ({} for defaults)")
            continue
        for k in spec:
            if k not in _LANE_KEYS:
                fault(f"{key}.{k}", f"unknown key (expected one of {', '.join(_LANE_KEYS)})")
        fallback = spec.get("fallback")
        if fallback is not None and not isinstance(fallback, str):
            fault(f"{key}.fallback", "must be a lane name")
            fallback = None
        strict = spec.get("strict", False)
        if not isinstance(strict, bool):
            fault(f"{key}.strict", "must be true or false")
            strict = False
        description = spec.get("description", "") or ""
        if not isinstance(description, str):
            fault(f"{key}.description", "must be a string")
            description = ""
        lanes[name] = Lane(name, fallback, strict, description)

    services: dict[str, Service] = {}
    raw_services = data.get("services") or {}
    if not isinstance(raw_services, dict):
        fault("services", "must be a mapping of service name to {port, versions}")
        raw_services = {}
    for name, spec in raw_services.items():
        key = f"services.{name}"
        if not isinstance(spec, dict):
            fault(key, "must be a mapping with 'versions'")
            continue
        for k in spec:
            if k not in _SERVICE_KEYS:
                fault(f"{key}.{k}", f"unknown key (expected one of {', '.join(_SERVICE_KEYS)})")
        port = spec.get("port", DEFAULT_PORT)
        ns = spec.get("namespace")
        if ns is not None and not isinstance(ns, str):
            fault(f"{key}.namespace", "must be a string")
            ns = None
        raw_versions = spec.get("versions")
        if not isinstance(raw_versions, dict):
            fault(f"{key}.versions", "must be a mapping of lane name to a list of endpoints")
            raw_versions = {}
        versions: dict[str, tuple[Endpoint, ...]] = {}
        for lane_name, eps in raw_versions.items():
            vkey = f"{key}.versions.{lane_name}"
            if eps is None:
                eps = []
            if isinstance(eps, str):
                eps = [eps]
            if not isinstance(eps, list):
                fault(vkey, "must be a list of 'host:port' endpoints")
                continue
            parsed: list[Endpoint] = []
            for i, ep in enumerate(eps):
                try:
                    parsed.append(parse_endpoint(ep))
                except ValueError as exc:
                    fault(f"{vkey}[{i}]", str(exc))
            versions[str(lane_name)] = tuple(parsed)
        canary = None
        if spec.get("canary") is not None:
            canary = _parse_canary(spec["canary"], f"{key}.canary", fault)
        services[str(name)] = Service(str(name), versions, port, ns, canary)

    before = len(problems)
    _validate(problems, lanes, services, baseline, header, baggage_key, namespace)
    # Attach line numbers to the semantic problems too.
    for i in range(before, len(problems)):
        key, sep, message = problems[i].partition(": ")
        line = marks.get(key)
        if sep and line:
            problems[i] = f"{key} (line {line}): {message}"
    if problems:
        raise TopologyError(problems, source)
    return Topology.build(
        lanes=lanes.values(),
        services=services.values(),
        baseline=baseline,
        header=header,
        baggage_key=baggage_key,
        namespace=namespace,
    )


def _parse_canary(spec: Any, key: str, fault: Callable[[str, str], None]) -> Canary | None:
    """Shape checks only; the semantic checks are _validate_canary's, shared with build()."""
    if not isinstance(spec, dict):
        fault(key, "must be a mapping with 'version', 'weight' and optional 'match'")
        return None
    for k in spec:
        if k not in _CANARY_KEYS:
            fault(f"{key}.{k}", f"unknown key (expected one of {', '.join(_CANARY_KEYS)})")
    version = spec.get("version")
    if not isinstance(version, str):
        fault(f"{key}.version", "must name a version of the service")
        return None
    raw_matches = spec.get("match") or []
    if not isinstance(raw_matches, list):
        fault(f"{key}.match", "must be a list of {headers, uri} matches")
        raw_matches = []
    matches: list[ContentMatch] = []
    for i, entry in enumerate(raw_matches):
        mkey = f"{key}.match[{i}]"
        if not isinstance(entry, dict):
            fault(mkey, "must be a mapping with 'headers' and/or 'uri'")
            continue
        for k in entry:
            if k not in ("headers", "uri"):
                fault(f"{mkey}.{k}", "unknown key (expected headers or uri)")
        headers: list[tuple[str, str, str]] = []
        raw_headers = entry.get("headers") or {}
        if not isinstance(raw_headers, dict):
            fault(f"{mkey}.headers", "must map header names to {exact|prefix|regex: value}")
            raw_headers = {}
        for hname, cond in sorted(raw_headers.items()):
            parsed = _parse_condition(cond, f"{mkey}.headers.{hname}", fault)
            if parsed is not None:
                headers.append((str(hname).lower(), *parsed))
        uri = None
        if entry.get("uri") is not None:
            uri = _parse_condition(entry["uri"], f"{mkey}.uri", fault)
        matches.append(ContentMatch(tuple(headers), uri))
    return Canary(version, spec.get("weight", 0), tuple(matches))


def _parse_condition(
    cond: Any, key: str, fault: Callable[[str, str], None]
) -> tuple[str, str] | None:
    if not isinstance(cond, dict) or len(cond) != 1:
        fault(key, "must be exactly one of {exact: V}, {prefix: V}, {regex: V}")
        return None
    ((kind, value),) = cond.items()
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # `exact: 1` in YAML means the header value "1"
    return str(kind), value
