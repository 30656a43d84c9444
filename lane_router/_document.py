"""``lanes.yaml`` documents: read, shape-check with line numbers, and write back.

The model and its rules live in :mod:`lane_router._topology`; this module turns a document into
model objects (every shape fault named by its key path and line), then lets
:meth:`Topology.build` check the rules once. The controller reuses :func:`parse_canary` for
TrafficCanary specs, which share the canary's document form.

    load_topology(path) / loads_topology(text) / topology_from_dict(data) -> Topology
    topology_to_dict(topology) -> dict      # the canonical document
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from lane_router._address import split_hostport
from lane_router._topology import (
    DEFAULT_PORT,
    Canary,
    ContentMatch,
    Endpoint,
    Lane,
    Service,
    Topology,
    TopologyError,
)
from lanes_sdk.wire import DEFAULT_BAGGAGE_KEY, DEFAULT_BASELINE, DEFAULT_HEADER

__all__ = [
    "canary_to_dict",
    "load_topology",
    "loads_topology",
    "parse_canary",
    "parse_endpoint",
    "topology_from_dict",
    "topology_to_dict",
]

_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*"
)
_TOP_KEYS = ("header", "baggageKey", "baseline", "namespace", "lanes", "services")
_LANE_KEYS = ("fallback", "strict", "description")
_SERVICE_KEYS = ("port", "namespace", "versions", "canary")
_CANARY_KEYS = ("version", "weight", "match")


def load_topology(path: str | Path) -> Topology:
    """Read and validate a ``lanes.yaml`` file. Raises TopologyError (also for I/O errors)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError([f"cannot read the file: {exc}"], source) from None
    return _loads(text, source)


def loads_topology(text: str, *, source: str | None = None) -> Topology:
    """Parse and validate ``lanes.yaml`` text; ``source`` names it in errors."""
    return _loads(text, source)


def topology_from_dict(data: Any, *, source: str | None = None) -> Topology:
    """Validate a parsed ``lanes.yaml`` document. Errors name the key path at fault."""
    return _from_document(data, source=source, marks={})


def parse_endpoint(text: Any) -> Endpoint:
    """``host:port``, with IPv6 in brackets (``[::1]:9081``). Raises ValueError."""
    host, port = split_hostport(text)
    if ":" not in host and _HOSTNAME_RE.fullmatch(host) is None:
        raise ValueError(f"{text!r}: {host!r} is not a host name or address")
    return Endpoint(host, port)


def topology_to_dict(topology: Topology) -> dict[str, Any]:
    """The topology as a ``lanes.yaml`` document (sorted, canonical)."""
    lanes: dict[str, Any] = {}
    for name, lane in topology.lanes.items():
        spec: dict[str, Any] = {}
        if lane.fallback and lane.fallback != topology.baseline:
            spec["fallback"] = lane.fallback
        if lane.strict:
            spec["strict"] = True
        if lane.description:
            spec["description"] = lane.description
        lanes[name] = spec
    services: dict[str, Any] = {}
    for name, svc in topology.services.items():
        entry: dict[str, Any] = {"port": svc.port}
        if svc.namespace:
            entry["namespace"] = svc.namespace
        entry["versions"] = {k: [str(e) for e in v] for k, v in svc.versions.items()}
        if svc.canary is not None:
            entry["canary"] = canary_to_dict(svc.canary)
        services[name] = entry
    return {
        "header": topology.header,
        "baggageKey": topology.baggage_key,
        "baseline": topology.baseline,
        "namespace": topology.namespace,
        "lanes": lanes,
        "services": services,
    }


def canary_to_dict(canary: Canary) -> dict[str, Any]:
    """A canary's ``lanes.yaml`` form."""
    out: dict[str, Any] = {"version": canary.version, "weight": canary.weight}
    if canary.matches:
        out["match"] = [m.as_dict() for m in canary.matches]
    return out


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
            canary = parse_canary(spec["canary"], f"{key}.canary", fault)
        services[str(name)] = Service(str(name), versions, port, ns, canary)

    # One validation pass: build() checks the model's rules (names, fallbacks, cycles, canaries)
    # even when the shape already failed, so a file's every fault is reported at once.
    topology = None
    try:
        topology = Topology.build(
            lanes=lanes.values(),
            services=services.values(),
            baseline=baseline,
            header=header,
            baggage_key=baggage_key,
            namespace=namespace,
        )
    except TopologyError as exc:
        for problem in exc.problems:  # attach line numbers to the semantic problems too
            key, sep, message = problem.partition(": ")
            line = marks.get(key)
            problems.append(f"{key} (line {line}): {message}" if sep and line else problem)
    if problems or topology is None:
        raise TopologyError(problems, source)
    return topology


def parse_canary(spec: Any, key: str, fault: Callable[[str, str], None]) -> Canary | None:
    """A canary from its ``lanes.yaml`` / TrafficCanary form; shape faults go to ``fault(key,
    message)``. The semantic checks (weight range, regexes, version) are ``Topology.build``'s."""
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
