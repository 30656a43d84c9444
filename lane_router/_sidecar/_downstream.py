"""The client side: one asyncio Protocol per accepted connection, parsing with httptools.

State is split by lifetime: the sidecar (per process), this object (per connection, with the
fields of the request head being parsed), and :class:`Exchange` (per request).
"""

from __future__ import annotations

import asyncio
import logging
import select
from collections import deque
from typing import TYPE_CHECKING, Any

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
    parse_url,
)

from lane_router._sidecar._exchange import Exchange
from lane_router._sidecar._http import (
    B_PENDING,
    B_PIPE,
    B_UPSTREAM,
    H_BAGGAGE,
    H_CL,
    H_CONNECTION,
    H_EXPECT,
    H_HOPS,
    H_HOST,
    H_LANE,
    H_TE,
    H_XFF,
    drop_connection_named,
    error_response,
)
from lane_router._topology import STRICT_MISS_REASON, STRICT_MISS_STATUS

if TYPE_CHECKING:
    from lane_router._sidecar._server import Sidecar
    from lane_router._sidecar._table import CanaryRoute, Route

__all__ = ["ClientConnection"]

log = logging.getLogger("lane_router.sidecar")

_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))
K_IDLE = 0  # waiting for a request: close quietly at the deadline
K_HEAD = 1  # a request head is arriving: 408 at the deadline (slowloris)
_GONE = select.POLLERR | select.POLLHUP  # reset, or closed both ways: nobody is there


class _Reject(Exception):
    """Raised from a parser callback to answer with the proxy's own error and close."""

    def __init__(self, status: int, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "baggage",
        "block_mask",
        "cl",
        "closed",
        "conn_tokens",
        "cur",
        "deadline",
        "dup_host",
        "expect",
        "head_bytes",
        "headers",
        "hops",
        "host",
        "hsize",
        "in_head",
        "kind",
        "lanes",
        "parser",
        "parsing",
        "peer",
        "queue",
        "sc",
        "special",
        "started",
        "te",
        "te_other",
        "transport",
        "url",
        "write_paused",
        "xff",
    )

    def __init__(self, sc: Sidecar) -> None:
        self.sc = sc
        self.transport: Any = None
        self.parser = HttpRequestParser(self)
        self.peer = b""
        self.cur: Exchange | None = None
        self.parsing: Exchange | None = None
        self.queue: deque[Exchange] | None = None
        self.block_mask = 0
        self.write_paused = False
        self.closed = False
        self.in_head = False
        self.head_bytes = 0
        self.deadline = 0.0
        self.kind = K_IDLE
        self.special = sc.table.special
        self._reset_head(0.0)

    def _reset_head(self, now: float) -> None:
        self.started = now
        self.url = b""
        self.hsize = 0
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

    # -- asyncio --------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sc = self.sc
        sc.metrics.accepted_connections += 1
        if len(sc.connections) >= sc.max_connections or sc.draining:
            sc.metrics.rejected_connections += 1
            self.closed = True
            reason = "draining" if sc.draining else "connection limit"
            transport.write(error_response(503, reason, service=None, lane=None, close=True))
            transport.close()
            return
        sc.connections.add(self)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode("ascii", "replace")
        self.deadline = sc.loop.time() + sc.keepalive_timeout
        self.kind = K_IDLE

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.in_head or self.parsing is None:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._reject(cause.status, cause.reason, cause.detail)
            else:
                self._internal(cause or exc)
            return
        except HttpParserUpgrade as up:
            # We never upgrade (Upgrade is hop-by-hop and dropped), so the bytes after the
            # request are the next request: parse them with a fresh parser.
            rest = data[int(up.args[0]) :]
            self.parser = HttpRequestParser(self)
            self.head_bytes = 0
            if rest and not self.closed:
                self.data_received(rest)
            return
        except HttpParserError as exc:
            self._reject(400, "bad request", str(exc) or type(exc).__name__)
            return
        except Exception as exc:
            self._internal(exc)
            return
        if self.in_head and self.head_bytes > self.sc.max_header_bytes:
            self._reject(431, "header too large", f"over {self.sc.max_header_bytes} bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        sc = self.sc
        sc.connections.discard(self)
        try:
            cur = self.cur
            if cur is not None:
                self.cur = None
                cur.client_lost()
            parsing = self.parsing
            if parsing is not None and parsing is not cur:
                parsing.dead = True
            if self.queue:
                for ex in self.queue:
                    ex.dead = True
                self.queue.clear()
        except Exception:
            sc.metrics.internal_errors += 1
            log.exception("internal error while closing a client connection")
        if sc.draining and not sc.connections:
            sc.drained()

    def pause_writing(self) -> None:
        self.write_paused = True
        cur = self.cur
        if cur is not None and cur.up is not None:
            cur.up.throttle(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        cur = self.cur
        if cur is not None and cur.up is not None:
            cur.up.throttle(False)

    # -- flow control ---------------------------------------------------------------------

    def block(self, bit: int) -> None:
        if not self.block_mask and not self.closed:
            self.transport.pause_reading()
        self.block_mask |= bit

    def unblock(self, bit: int) -> None:
        if self.block_mask & bit:
            self.block_mask &= ~bit
            if not self.block_mask and not self.closed:
                self.transport.resume_reading()

    # -- httptools ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        now = self.sc.loop.time()
        self._reset_head(now)
        self.special = self.sc.table.special
        self.in_head = True
        self.deadline = now + self.sc.header_timeout
        self.kind = K_HEAD

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            return  # trailers of a chunked request are not forwarded
        self.hsize += len(name) + len(value) + 4
        kind = self.special.get(name.lower())
        if kind is None:
            self.headers += (name, b": ", value, b"\r\n")
        elif kind == H_HOST:
            if self.host is not None:
                self.dup_host = True
            self.host = value
        elif kind == H_LANE:
            if self.lanes is None:
                self.lanes = [value]
            else:
                self.lanes.append(value)
        elif kind == H_BAGGAGE:
            self.headers += (name, b": ", value, b"\r\n")
            if self.baggage is None:
                self.baggage = [value]
            else:
                self.baggage.append(value)
        elif kind == H_CL:
            self.cl = value
        elif kind == H_TE:
            if self.te or value.strip(b" \t").lower() != b"chunked":
                self.te_other = True  # a coding we would have to undo: 501
            self.te = True
        elif kind == H_CONNECTION:
            if self.conn_tokens is None:
                self.conn_tokens = [value]
            else:
                self.conn_tokens.append(value)
        elif kind == H_XFF:
            if self.xff is None:
                self.xff = [value]
            else:
                self.xff.append(value)
        elif kind == H_HOPS:
            value = value.strip()
            self.hops = int(value) if value.isdigit() and len(value) < 6 else 0
        elif kind == H_EXPECT:
            self.expect = value.strip().lower() == b"100-continue"
        # H_HOP: dropped

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        sc = self.sc
        parser = self.parser
        ex = Exchange(self, self.started)
        self.parsing = ex
        ex.keep_alive = parser.should_keep_alive()
        ex.client_10 = parser.get_http_version() == "1.0"
        if self.hsize + len(self.url) > sc.max_header_bytes:
            raise _Reject(431, "header too large", f"over {sc.max_header_bytes} bytes")
        cl = self.cl
        method = parser.get_method()
        if self.te or (cl is not None and cl.strip(b" \t0")):
            ex.replayable = False
        else:  # no body: llhttp completes the message right after this callback
            ex.client_done = True
            # Re-sent after a reset only if idempotent (RFC 9110 9.2.2): a bodiless POST the
            # upstream may have applied is never sent twice.
            ex.replayable = method in _IDEMPOTENT
        self._plan(ex, method)
        if self.cur is None:
            self.cur = ex
            ex.start()
        else:
            if self.queue is None:
                self.queue = deque()
            self.queue.append(ex)
            self.block(B_PIPE)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is not None:
            ex.client_body(body)

    def on_message_complete(self) -> None:
        ex = self.parsing
        self.parsing = None
        self.head_bytes = 0
        if ex is not None:
            ex.client_finished()
        if self.cur is None:  # answered before its end (an error): now idle, not mid-head
            self.deadline = self.sc.loop.time() + self.sc.keepalive_timeout
            self.kind = K_IDLE

    # -- the routing decision -------------------------------------------------------------

    def _plan(self, ex: Exchange, method: bytes) -> None:
        """Fill ``ex`` with the route and the forwarded head, or with the error to answer."""
        sc = self.sc
        table = sc.table
        url = self.url
        authority = self.host
        ex.is_head = method == b"HEAD"  # also our own errors must not send it a body
        if self.dup_host:
            ex.err = (400, "bad request", "more than one Host header")
            ex.keep_alive = False
            return
        if method == b"CONNECT":
            ex.err = (405, "method not allowed", "CONNECT is not supported")
            ex.keep_alive = False
            return
        if url[:1] != b"/" and url != b"*":
            # absolute-form (a client using the sidecar as HTTP_PROXY): the target wins
            try:
                parts = parse_url(url)
            except Exception:
                ex.err = (400, "bad request", "unparsable request target")
                ex.keep_alive = False
                return
            if (parts.schema or b"").lower() != b"http" or not parts.host:
                ex.err = (400, "bad request", "only http:// absolute targets are proxied")
                ex.keep_alive = False
                return
            authority = parts.host if parts.port is None else b"%s:%d" % (parts.host, parts.port)
            url = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
        if self.te_other:
            ex.err = (501, "unsupported transfer-encoding", "only chunked is proxied")
            ex.keep_alive = False
            return
        if not authority:
            ex.err = (400, "bad request", "no Host header")
            ex.keep_alive = False
            return
        service = table.service_for_host(authority)
        lane = table.lane_of(self.lanes, self.baggage)
        if service is None:
            ex.lane = table.topology.effective_lane(lane)  # never a raw client value
            ex.err = (404, "unknown service", f"no service for host {_shown(authority)}")
            ex.asked = _shown(authority)
            return
        route = table.route(service, lane)
        if route.canary is not None:  # the one check a service without a canary pays
            route = self._canary(route.canary, route, url, authority)
        ex.service = service
        ex.lane = route.lane
        ex.route = route
        if self.hops >= sc.max_hops:
            ex.err = (508, "loop detected", f"{sc.hops_header} reached {sc.max_hops}")
            return
        if not route.pools:
            miss = table.topology.routes[service][route.lane]  # cold path: the one wording
            ex.err = (STRICT_MISS_STATUS, STRICT_MISS_REASON, miss.miss_detail)
            return
        headers = self.headers
        if self.conn_tokens is not None:
            headers = drop_connection_named(headers, self.conn_tokens)
        parts_out = [method, b" ", url, b" HTTP/1.1\r\nhost: ", authority, b"\r\n", *headers]
        if lane is not None:  # the routing header is always re-emitted validated, whichever
            # carrier held the lane (so a baggage-only lane reaches the next hop as x-lane too)
            parts_out += (table.header, b": ", lane.encode("ascii"), b"\r\n")
        xff = self.peer if self.xff is None else b", ".join((*self.xff, self.peer))
        parts_out += (b"x-forwarded-for: ", xff, b"\r\n", sc.hops_line[self.hops])
        if self.te:
            ex.chunked_up = True
            parts_out.append(b"transfer-encoding: chunked\r\n\r\n")
        elif self.cl is not None:
            parts_out += (b"content-length: ", self.cl, b"\r\n\r\n")
        else:
            parts_out.append(b"\r\n")
        ex.expect = self.expect and not ex.client_10 and not ex.client_done
        ex.head = b"".join(parts_out)

    def _canary(self, canary: CanaryRoute, route: Route, url: bytes, authority: bytes) -> Route:
        """A baseline request to a service with a canary: :meth:`Canary.takes` decides."""
        if not canary.canary.matches:
            return canary.route if canary.takes_by_weight() else route
        found: dict[str, list[str]] = {}
        needs = canary.needs
        if needs:
            h = self.headers
            for i in range(0, len(h), 4):
                name = h[i].lower()
                if name in needs:
                    found.setdefault(name.decode("latin-1"), []).append(
                        h[i + 2].strip(b" \t").decode("latin-1")
                    )
            # Fields the parser keeps apart from the copied ones (the lane header cannot be
            # matched: the topology forbids it; hop-by-hop fields belong to this hop only).
            for name, values in (
                (b"host", [authority]),
                (b"content-length", [self.cl] if self.cl is not None else None),
                (b"x-forwarded-for", self.xff),
                (b"connection", self.conn_tokens),
            ):
                if values and name in needs:
                    found[name.decode("ascii")] = [
                        v.strip(b" \t").decode("latin-1") for v in values
                    ]
        path = url.partition(b"?")[0].decode("latin-1")
        return canary.route if canary.takes(lambda n: found.get(n, ()), path) else route

    # -- ending ---------------------------------------------------------------------------

    def exchange_done(self, ex: Exchange, now: float) -> None:
        if self.cur is ex:
            self.cur = None
        if self.closed:
            return
        # Its upstream may have gone while full (no resume_writing will come): read again.
        self.unblock(B_UPSTREAM | B_PENDING)
        if not ex.keep_alive or self.sc.draining:
            self.closed = True
            self.transport.close()
            return
        queue = self.queue
        if queue:
            nxt = queue.popleft()
            if not queue:
                self.unblock(B_PIPE)
            self.cur = nxt
            self.sc.loop.call_soon(nxt.start_safely)
        elif self.parsing is None:
            self.deadline = now + self.sc.keepalive_timeout
            self.kind = K_IDLE

    def tick(self, now: float) -> None:
        if self.block_mask and not self.closed and self._peer_gone():
            # While its reading is paused the loop does not watch the socket, so a reset
            # would go unseen until the upstream drains (or the idle timeout, 60 s).
            self.abort()  # connection_lost: the exchange records 499 and frees its upstream
            return
        cur = self.cur
        if cur is not None:
            cur.tick(now)
        elif now >= self.deadline and not self.closed:
            if self.kind == K_HEAD or self.in_head:
                self._reject(
                    408, "header timeout", f"request head not complete in {self.sc.header_timeout}s"
                )
            else:
                self.close()

    def _peer_gone(self) -> bool:
        """Whether the client's socket reports an error or a full hang-up (non-destructive)."""
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            fd = sock.fileno()
            if fd < 0:
                return False
            probe = select.poll()
            probe.register(fd, 0)  # POLLERR and POLLHUP are always reported
            return any(ev & _GONE for _, ev in probe.poll(0))
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def idle(self) -> bool:
        return self.cur is None and self.parsing is None and not self.in_head

    def _reject(self, status: int, reason: str, detail: str | None) -> None:
        """Answer a request the parser could not take, then close (the stream is lost)."""
        cur = self.cur
        if cur is not None:
            if self.parsing is cur:  # cur's own body is malformed
                cur.keep_alive = False
                cur.reply_error(status, reason, detail)
            else:  # a pipelined request after cur is broken: finish cur, then close
                cur.keep_alive = False
                self.block(B_PIPE)
            return
        if not self.closed:
            self.sc.metrics.observe("-", "-", "-", status, self.sc.loop.time() - self.started)
            self.transport.write(
                error_response(status, reason, service=None, lane=None, close=True, detail=detail)
            )
            self.close()

    def _internal(self, exc: BaseException) -> None:
        cur = self.cur or self.parsing
        if cur is not None and not cur.done:
            if self.cur is None:
                self.cur = cur
            cur.internal(exc)
        else:
            self.sc.metrics.internal_errors += 1
            log.error("internal error on a client connection", exc_info=exc)
            if not self.closed:
                self.transport.write(
                    error_response(
                        502,
                        "internal",
                        service=None,
                        lane=None,
                        close=True,
                        detail=type(exc).__name__,
                    )
                )
                self.close()


def _shown(raw: bytes) -> str:
    return raw[:253].decode("latin-1")
