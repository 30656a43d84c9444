"""What a request head gets: a route (a lane's or a canary's) or a refusal. Pure, no I/O.

The client connection fills a :class:`RequestHead` from the parser's callbacks; once the head
is complete, :func:`decide` reads it with the live :class:`RouteTable` and answers a
:class:`Forward` or a :class:`Refusal`, and :func:`upstream_head` writes the head the upstream
gets. Neither touches a socket, a clock or the sidecar, so both are tested on their own
(``tests/sidecar/test_sidecar_decide.py``); the only chance involved is the canary's weight
roll, which comes from ``roll`` (a callable, ``random.random`` by default).
"""

from __future__ import annotations

from collections.abc import Callable
from random import random

from httptools import parse_url

from lane_router._sidecar._http import drop_connection_named
from lane_router._sidecar._table import CanaryRoute, Route, RouteTable
from lane_router._topology import STRICT_MISS_REASON, STRICT_MISS_STATUS

__all__ = ["Forward", "Refusal", "RequestHead", "decide", "upstream_head"]

_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


class RequestHead:
    """One request head as parsed: the fields the proxy acts on, and the rest to copy.

    ``headers`` is flat (name, b": ", value, b"\\r\\n" per copied field line); the fields the
    proxy handles itself (Host, the lane header, framing, hop-by-hop) are kept apart.
    """

    __slots__ = (
        "baggage",
        "cl",
        "conn_tokens",
        "cookies",
        "dup_host",
        "expect",
        "headers",
        "hops",
        "host",
        "hsize",
        "http10",
        "keep_alive",
        "lanes",
        "method",
        "nlines",
        "started",
        "te",
        "te_other",
        "tokens",
        "upgrade",
        "upgrading",
        "url",
        "xff",
    )

    def __init__(self, started: float) -> None:
        self.started = started
        self.method = b"GET"
        self.url = b""
        self.hsize = 0
        self.nlines = 0  # field lines so far (head, then trailers)
        self.headers: list[bytes] = []
        self.host: bytes | None = None
        self.dup_host = False
        self.lanes: list[bytes] | None = None
        self.baggage: list[bytes] | None = None
        self.conn_tokens: list[bytes] | None = None
        self.te = False
        self.te_other = False
        self.cl: bytes | None = None
        self.expect = False
        self.xff: list[bytes] | None = None
        self.hops = 0
        self.http10 = False
        self.keep_alive = True
        self.upgrade: bytes | None = None  # the Upgrade field's value
        self.upgrading = False  # the parser takes it as an upgrade (Connection: upgrade too)
        self.tokens: list[bytes] | None = None  # edge mode only (lane_router._sidecar._edge)
        self.cookies: list[bytes] | None = None  # edge mode only

    @property
    def has_body(self) -> bool:
        cl = self.cl
        return self.te or (cl is not None and bool(cl.strip(b" \t0")))

    @property
    def replayable(self) -> bool:
        """Whether it may be sent again after a reset: no body and idempotent (RFC 9110 9.2.2)."""
        return not self.has_body and self.method in _IDEMPOTENT


class Refusal:
    """The proxy answers itself: ``status``/``reason`` (+ ``detail``), closing if ``close``.

    ``service`` and ``lane`` label the answer and the metrics; ``asked`` is what the client
    named when no service matched (shown, bounded, in the error body).
    """

    __slots__ = ("asked", "close", "detail", "lane", "reason", "service", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str | None = None,
        *,
        close: bool = False,
        service: str = "-",
        lane: str = "-",
        asked: str | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.detail = detail
        self.close = close
        self.service = service
        self.lane = lane
        self.asked = asked

    def __repr__(self) -> str:
        return f"Refusal({self.status}, {self.reason!r}, {self.detail!r}, close={self.close})"


class Forward:
    """Forward to ``route`` (its pools in fallback order). ``service`` and ``lane`` (the
    effective lane) label it; ``asked_lane`` is the request's lane when valid (re-emitted to
    the next hop); ``authority`` and ``target`` are what the upstream gets."""

    __slots__ = ("asked_lane", "authority", "lane", "route", "service", "target")

    def __init__(
        self, route: Route, asked_lane: str | None, authority: bytes, target: bytes
    ) -> None:
        self.route = route
        self.service = route.service
        self.lane = route.lane
        self.asked_lane = asked_lane
        self.authority = authority
        self.target = target

    def __repr__(self) -> str:
        return (
            f"Forward({self.service}, {self.route.lane}, via {[p.lane for p in self.route.pools]})"
        )


def decide(
    table: RouteTable,
    head: RequestHead,
    *,
    max_hops: int,
    hops_header: str = "x-lanes-hops",
    roll: Callable[[], float] = random,
) -> Forward | Refusal:
    """The routing decision for one complete request head (design.md, "The sidecar")."""
    method = head.method
    url = head.url
    authority = head.host
    if head.dup_host:
        return Refusal(400, "bad request", "more than one Host header", close=True)
    if method == b"CONNECT":
        return Refusal(405, "method not allowed", "CONNECT is not supported", close=True)
    if head.upgrading and head.has_body:
        # The parser skips the body of an upgrade request: forwarding it would desync both
        # connections (the body would be read as requests). Envoy refuses it too.
        return Refusal(400, "bad request", "an Upgrade request cannot carry a body", close=True)
    if url[:1] != b"/" and url != b"*":
        # absolute-form (a client using the sidecar as HTTP_PROXY): the target wins
        try:
            parts = parse_url(url)
        except Exception:
            return Refusal(400, "bad request", "unparsable request target", close=True)
        if (parts.schema or b"").lower() != b"http" or not parts.host:
            return Refusal(
                400, "bad request", "only http:// absolute targets are proxied", close=True
            )
        authority = parts.host if parts.port is None else b"%s:%d" % (parts.host, parts.port)
        url = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
    if head.te_other:
        return Refusal(501, "unsupported transfer-encoding", "only chunked is proxied", close=True)
    if not authority:
        return Refusal(400, "bad request", "no Host header", close=True)
    service = table.service_for_host(authority)
    lane = table.lane_of(head.lanes, head.baggage)
    if service is None:
        shown = _shown(authority)
        return Refusal(
            404,
            "unknown service",
            f"no service for host {shown}",
            lane=table.topology.effective_lane(lane),  # never a raw client value
            asked=shown,
        )
    route = table.route(service, lane)
    if route.canary is not None:  # the one check a service without a canary pays
        route = _canary(route.canary, route, head, url, authority, roll)
    if head.hops >= max_hops:
        return Refusal(
            508,
            "loop detected",
            f"{hops_header} reached {max_hops}",
            service=service,
            lane=route.lane,
        )
    if not route.pools:
        miss = table.topology.routes[service][route.lane]  # cold path: the one wording
        return Refusal(
            STRICT_MISS_STATUS,
            STRICT_MISS_REASON,
            miss.miss_detail,
            service=service,
            lane=route.lane,
        )
    return Forward(route, lane, authority, url)


def upstream_head(
    table: RouteTable, head: RequestHead, fwd: Forward, peer: bytes, hops_line: bytes
) -> bytes:
    """The request head the upstream gets: hop-by-hop fields dropped, the lane re-emitted
    validated, X-Forwarded-For appended, the hop counter raised, the body re-framed."""
    headers = head.headers
    if head.conn_tokens is not None:
        headers = drop_connection_named(headers, head.conn_tokens)
    out = [head.method, b" ", fwd.target, b" HTTP/1.1\r\nhost: ", fwd.authority, b"\r\n", *headers]
    if fwd.asked_lane is not None:  # whichever carrier held the lane (so a baggage-only
        # lane reaches the next hop as the routing header too)
        out += (table.header, b": ", fwd.asked_lane.encode("ascii"), b"\r\n")
    xff = peer if head.xff is None else b", ".join((*head.xff, peer))
    out += (b"x-forwarded-for: ", xff, b"\r\n", hops_line)
    if head.upgrading and head.upgrade is not None:
        out += (b"connection: upgrade\r\nupgrade: ", head.upgrade, b"\r\n")
    if head.te:
        out.append(b"transfer-encoding: chunked\r\n\r\n")
    elif head.cl is not None:
        out += (b"content-length: ", head.cl, b"\r\n\r\n")
    else:
        out.append(b"\r\n")
    return b"".join(out)


def _canary(
    canary: CanaryRoute,
    route: Route,
    head: RequestHead,
    url: bytes,
    authority: bytes,
    roll: Callable[[], float],
) -> Route:
    """A baseline request to a service with a canary: :meth:`Canary.takes` decides."""
    if not canary.canary.matches:
        return canary.route if roll() * 100 < canary.weight else route
    found: dict[str, list[str]] = {}
    needs = canary.needs
    if needs:
        h = head.headers
        for i in range(0, len(h), 4):
            name = h[i].lower()
            if name in needs:
                found.setdefault(name.decode("latin-1"), []).append(
                    h[i + 2].strip(b" \t").decode("utf-8", "surrogateescape")
                )
        # Fields the parser keeps apart from the copied ones (the lane header cannot be
        # matched: the topology forbids it; hop-by-hop fields belong to this hop only).
        for name, values in (
            (b"host", [authority]),
            (b"content-length", [head.cl] if head.cl is not None else None),
            (b"x-forwarded-for", head.xff),
            (b"connection", head.conn_tokens),
        ):
            if values and name in needs:
                found[name.decode("ascii")] = [
                    v.strip(b" \t").decode("utf-8", "surrogateescape") for v in values
                ]
    path = url.partition(b"?")[0].decode("utf-8", "surrogateescape")
    taken = canary.canary.takes(lambda n: found.get(n, ()), path, roll())
    return canary.route if taken else route


def _shown(raw: bytes) -> str:
    return raw[:253].decode("latin-1")
