"""Independent evaluators of the rendered routing config, written from the published semantics.

Nothing here imports the renderers: these functions read the *objects* and decide where a request
goes the way Istio (VirtualService ``http`` routes) and a Gateway API (GAMMA) implementation would,
so a test can compare that with what the topology model predicts.

Istio (istio.io VirtualService reference; Envoy route matching):
* routes are tried in order, the first whose ``match`` holds wins; no ``match`` = catch-all;
* entries of ``match`` are OR, conditions inside one entry AND;
* ``headers``: ``exact``/``prefix``/``regex`` (RE2, whole value), ``{}`` = present; a missing
  header fails the condition; ``withoutHeaders`` is the negation, and a missing header passes it
  (istiod sets ``invert_match`` and ``treat_missing_header_as_empty`` on the Envoy matcher);
* header names are case-insensitive, values are trimmed of OWS by the HTTP codec;
* repeated header lines: Envoy 1.40 tests each field line (any line matching wins); older Envoys
  joined them with ``,``. ``mode`` picks one; the tests run both.
* nothing matches: 404.
* ``uri`` (canaries): istiod turns ``exact`` into Envoy's ``path`` and ``regex`` into
  ``safe_regex``, both compared with the path *without* its query string, and ``prefix`` into
  Envoy's ``prefix``, compared with the whole ``:path``, query included;
* ``route`` with several destinations splits by ``weight`` (relative weights; one destination
  without a weight takes everything; a weight of 0 takes nothing): ``Outcome.split``.

Gateway API (HTTPRoute spec, "precedence"): among all rules of every route attached to the
Service, an ``Exact`` path match wins, then the longest ``PathPrefix``, then the match with the
most header matches; ties go to the older route (then the route first by ``namespace/name``),
then to the first rule in list order. A ``RegularExpression`` path's place is
implementation-specific: ranked here with prefixes by the length of the pattern, as Contour
does. A match without ``path`` is ``PathPrefix /``. Paths are compared without the query;
``PathPrefix`` matches whole segments. Header values compare exactly (``Exact``) or as an RE2
full match (``RegularExpression``); repeated headers are joined with ``,`` (RFC 9110). A rule's
``backendRefs`` split by ``weight`` (default 1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = ["Outcome", "gamma_backend", "gamma_rule", "istio_outcome"]

Headers = Sequence[tuple[str, str]]
_OWS = " \t"
_ALLOWED_MATCH_KEYS = {"headers", "withoutHeaders", "name", "uri"}
_ALLOWED_ROUTE_KEYS = {"name", "match", "route", "directResponse", "headers"}


@dataclass(frozen=True)
class Outcome:
    kind: str  # "route" | "direct" | "not-found"
    host: str | None = None
    subset: str | None = None
    status: int | None = None
    body: str | None = None
    split: tuple[tuple[str, int], ...] = ()  # (subset, weight) of a route with destinations

    def pick(self, roll: float) -> str | None:
        """The subset a weighted route sends a request to, for ``roll`` uniform in [0, 1)."""
        total = sum(w for _, w in self.split)
        point = roll * total
        for subset, weight in self.split:
            if point < weight:
                return subset
            point -= weight
        return None


@cache
def _compile(pattern: str) -> re.Pattern[str]:
    if re.search(r"\(\?[=!<]|\\[1-9]", pattern):  # RE2 has no look-around or back-references
        raise AssertionError(f"not an RE2 pattern: {pattern!r}")
    return re.compile(pattern)


def _lines(headers: Headers, name: str, mode: str) -> list[str] | None:
    values = [v.strip(_OWS) for k, v in headers if k.lower() == name.lower()]
    if not values:
        return None
    return values if mode == "per-line" else [",".join(values)]


def _value_matches(cond: dict[str, Any], value: str) -> bool:
    if set(cond) - {"exact", "prefix", "regex"} or len(cond) > 1:
        raise AssertionError(f"unsupported header condition {cond!r}")
    if "exact" in cond:
        return value == cond["exact"]
    if "prefix" in cond:
        return value.startswith(cond["prefix"])
    if "regex" in cond:
        return _compile(cond["regex"]).fullmatch(value) is not None
    return True  # {} = present


def _header_holds(name: str, cond: dict[str, Any], headers: Headers, mode: str) -> bool:
    lines = _lines(headers, name, mode)
    if lines is None:
        return False
    return any(_value_matches(cond, v) for v in lines)


def _uri_holds(cond: dict[str, Any], path: str) -> bool:
    if len(cond) != 1 or set(cond) - {"exact", "prefix", "regex"}:
        raise AssertionError(f"unsupported uri condition {cond!r}")
    if "prefix" in cond:  # Envoy's `prefix` sees the query string too
        return path.startswith(cond["prefix"])
    return _value_matches(cond, path.partition("?")[0])


def _entry_holds(entry: dict[str, Any], headers: Headers, mode: str, path: str = "/") -> bool:
    if set(entry) - _ALLOWED_MATCH_KEYS:
        raise AssertionError(f"evaluator does not model match keys {set(entry)}")
    if "uri" in entry and not _uri_holds(entry["uri"], path):
        return False
    for name, cond in (entry.get("headers") or {}).items():
        if not _header_holds(name, cond, headers, mode):
            return False
    for name, cond in (entry.get("withoutHeaders") or {}).items():
        if _header_holds(name, cond, headers, mode):
            return False
    return True


def istio_outcome(
    vs_spec: dict[str, Any], headers: Headers, *, mode: str = "per-line", path: str = "/"
) -> Outcome:
    """Where Istio sends a request with ``headers`` and ``path`` through this VirtualService.

    A route with one destination gives ``subset``; a weighted one gives ``split`` (and
    ``subset`` None): sample it with ``Outcome.pick``.
    """
    for route in vs_spec.get("http", []):
        if set(route) - _ALLOWED_ROUTE_KEYS:
            raise AssertionError(f"evaluator does not model route keys {set(route)}")
        match = route.get("match")
        if match and not any(_entry_holds(e, headers, mode, path) for e in match):
            continue
        if "directResponse" in route:
            dr = route["directResponse"]
            return Outcome("direct", status=dr["status"], body=dr.get("body", {}).get("string"))
        dests = route["route"]
        hosts = {d["destination"]["host"] for d in dests}
        if len(hosts) != 1:
            raise AssertionError(f"evaluator models one host per route, got {hosts}")
        if len(dests) == 1 and "weight" not in dests[0]:
            split = ((dests[0]["destination"].get("subset"), 100),)
        else:
            split = tuple((d["destination"].get("subset"), int(d.get("weight", 0))) for d in dests)
        live = [(sub, w) for sub, w in split if w > 0]
        subset = live[0][0] if len(live) == 1 else None
        return Outcome("route", host=hosts.pop(), subset=subset, split=tuple(live))
    return Outcome("not-found", status=404)


def _path_rank(path_match: dict[str, Any], path: str) -> tuple[int, int] | None:
    """(class, length) for precedence, or None when the path does not match."""
    kind, value = path_match.get("type", "PathPrefix"), path_match["value"]
    if kind == "Exact":
        return (2, len(value)) if path == value else None
    if kind == "PathPrefix":
        base = value.rstrip("/")
        ok = path == base or path.startswith(base + "/") or not base
        return (1, len(value)) if ok else None
    if kind == "RegularExpression":
        return (1, len(value)) if _compile(value).fullmatch(path) else None
    raise AssertionError(f"evaluator does not model path type {kind}")


def gamma_rule(
    routes: Sequence[dict[str, Any]], headers: Headers, path: str = "/"
) -> list[dict[str, Any]] | None:
    """The ``backendRefs`` of the rule a GAMMA implementation picks (method GET).

    ``routes`` are in creation order, oldest first (the spec's first tie-breaker): callers try
    several orders to show the outcome does not depend on it.
    """
    bare = path.partition("?")[0]
    ranked: list[tuple[tuple[int, int], int, int, int, dict[str, Any]]] = []
    for rank_route, route in enumerate(routes):
        for rank_rule, rule in enumerate(route["spec"]["rules"]):
            for m in rule.get("matches") or [{}]:
                if set(m) - {"headers", "path"}:
                    raise AssertionError(f"evaluator does not model {set(m)}")
                prank = _path_rank(m.get("path", {"type": "PathPrefix", "value": "/"}), bare)
                if prank is None:
                    continue
                conds = m.get("headers", [])
                ok = True
                for c in conds:
                    lines = _lines(headers, c["name"], "joined")
                    kind = c.get("type", "Exact")
                    if lines is None:
                        ok = False
                    elif kind == "Exact":
                        ok = lines[0] == c["value"]
                    elif kind == "RegularExpression":
                        ok = _compile(c["value"]).fullmatch(lines[0]) is not None
                    else:
                        raise AssertionError(f"evaluator does not model header type {kind}")
                    if not ok:
                        break
                if ok:
                    key = (-prank[0], -prank[1])
                    ranked.append((key, -len(conds), rank_route, rank_rule, rule))
    if not ranked:
        return None
    ranked.sort(key=lambda t: t[:4])
    return ranked[0][4]["backendRefs"]


def gamma_backend(routes: Sequence[dict[str, Any]], headers: Headers) -> dict[str, Any] | None:
    """The one backendRef a GAMMA implementation picks for a request (path "/", method GET)."""
    refs = gamma_rule(routes, headers)
    if refs is None:
        return None
    (backend,) = refs
    return backend
