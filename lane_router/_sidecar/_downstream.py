"""The client side: one asyncio Protocol per accepted connection, parsing with httptools.

State is split by lifetime: the sidecar (per process), this object (per connection), a
:class:`RequestHead` (the head being parsed), the decision on it (``_decide``, pure) and an
:class:`Exchange` (per request in flight).
"""

from __future__ import annotations

import asyncio
import logging
import select
from collections import deque
from typing import Any

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
)

from lane_router._sidecar._decide import Forward, Refusal, RequestHead, decide, upstream_head
from lane_router._sidecar._edge import H_EDGE
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
    H_UPGRADE,
    H_XFF,
    error_response,
)
from lane_router._sidecar._ports import Proxy

__all__ = ["ClientConnection"]

log = logging.getLogger("lanes.sidecar")

K_IDLE = 0  # waiting for a request: close quietly at the deadline
K_HEAD = 1  # a request head is arriving: 408 at the deadline (slowloris)
_GONE = select.POLLERR | select.POLLHUP  # reset, or closed both ways: nobody is there
# Requests parsed ahead of the one being served (pipelining). Reading pauses as soon as one
# waits, but one read may hold hundreds: past this many the connection takes no more (the last
# one queued answers with `connection: close`, the rest are never read, RFC 9112 9.3.2).
MAX_PIPELINED = 128


class _Stop(Exception):
    """Raised from a parser callback to parse nothing more on this connection."""


class _Discard:
    """Where a connection's bytes go once it has decided to close: nowhere."""

    __slots__ = ()

    def from_client(self, data: bytes) -> None:
        pass


_DISCARD = _Discard()


class _Reject(Exception):
    """Raised from a parser callback to answer with the proxy's own error and close."""

    def __init__(self, status: int, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "block_mask",
        "body_fed",
        "closed",
        "cur",
        "deadline",
        "eof",
        "head_bytes",
        "in_head",
        "kind",
        "parser",
        "parsing",
        "peer",
        "queue",
        "req",
        "sc",
        "special",
        "transport",
        "tunnel",
        "write_paused",
    )

    def __init__(self, sc: Proxy) -> None:
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
        self.eof = False  # the client half-closed (sent its FIN)
        self.in_head = False
        self.head_bytes = 0
        self.deadline = 0.0
        self.kind = K_IDLE
        self.special = sc.table.special
        self.req = RequestHead(0.0)
        # Set at an Upgrade head (later bytes are the upgraded protocol's) or once the
        # connection has decided to close (_DISCARD): nothing after is parsed as a request.
        self.tunnel: Exchange | _Discard | None = None
        self.body_fed = False

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
        tunnel = self.tunnel
        if tunnel is not None:  # after an Upgrade head: never parsed as requests
            tunnel.from_client(data)
            return
        parsing = self.parsing
        if self.in_head or parsing is None:
            self.head_bytes += len(data)
        else:
            self.body_fed = False
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Stop):
                self.tunnel = _DISCARD
            elif isinstance(cause, _Reject):
                self._reject(cause.status, cause.reason, cause.detail)
            else:
                self._internal(cause or exc)
            return
        except HttpParserUpgrade as up:
            # The parser stops at an upgrade head (on_headers_complete set the tunnel). What
            # follows belongs to the upgraded protocol: it waits for the upstream's 101 and is
            # dropped if the upgrade is refused or declined (the connection then closes).
            rest = data[int(up.args[0]) :]
            tunnel = self.tunnel
            if tunnel is None:  # an upgrade we did not see coming: never parse on
                self.tunnel = _DISCARD
                self._reject(400, "bad request", "unexpected protocol upgrade")
                return
            if rest and not self.closed:
                tunnel.from_client(rest)
            return
        except HttpParserError as exc:
            self._reject(400, "bad request", str(exc) or type(exc).__name__)
            return
        except Exception as exc:
            self._internal(exc)
            return
        if self.in_head:
            if self.head_bytes > self.sc.max_header_bytes:
                self._reject(431, "header too large", f"over {self.sc.max_header_bytes} bytes")
            elif self.parser.get_http_version() == "0.0" and b"\n" in data.lstrip(b"\r\n"):
                # A request line ended without a version: HTTP/0.9 (llhttp would wait for
                # headers that never come, until the header timeout).
                self._reject(400, "bad request", "HTTP/0.9 is not supported")
        elif parsing is not None and self.parsing is parsing:
            # Mid-body. Bytes that carried no body are chunk framing or trailers; httptools
            # grows an unfinished trailer by copying, so they count against the head limit.
            if self.body_fed:
                self.head_bytes = 0
            else:
                self.head_bytes += len(data)
                if self.head_bytes > self.sc.max_header_bytes:
                    self._reject(
                        431, "header too large", f"trailers over {self.sc.max_header_bytes} bytes"
                    )

    def eof_received(self) -> bool | None:
        """The client half-closed. Requests already complete are still answered (then the
        connection closes; a head left unfinished is dropped); idle or mid-body, it closes
        now; in a tunnel the half-close is passed on to the upstream."""
        self.eof = True
        cur = self.cur
        if cur is not None and cur.status == 101:
            return cur.tunnel_eof(True)
        if cur is None or self.parsing is not None:
            return None
        queue = self.queue
        (queue[-1] if queue else cur).keep_alive = False
        if self.tunnel is None:
            self.tunnel = _DISCARD
        return True

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
        if self.closed:
            raise _Stop  # decided to close: what follows is never a request
        now = self.sc.loop.time()
        self.req = RequestHead(now)
        self.special = self.sc.table.special
        self.in_head = True
        self.deadline = now + self.sc.header_timeout
        self.kind = K_HEAD

    def on_url(self, url: bytes) -> None:
        self.req.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.req
        req.hsize += len(name) + len(value) + 4
        req.nlines += 1
        if req.nlines > self.sc.max_headers:
            raise _Reject(431, "too many headers", f"over {self.sc.max_headers} field lines")
        if not self.in_head:  # trailers of a chunked request: counted, never forwarded
            if req.hsize > self.sc.max_header_bytes:
                raise _Reject(431, "header too large", f"over {self.sc.max_header_bytes} bytes")
            return
        kind = self.special.get(name.lower())
        if kind is None:
            req.headers += (name, b": ", value, b"\r\n")
        elif kind == H_HOST:
            if req.host is not None:
                req.dup_host = True
            req.host = value
        elif kind == H_LANE:
            if req.lanes is None:
                req.lanes = [value]
            else:
                req.lanes.append(value)
        elif kind == H_BAGGAGE:
            req.headers += (name, b": ", value, b"\r\n")
            if req.baggage is None:
                req.baggage = [value]
            else:
                req.baggage.append(value)
        elif kind == H_CL:  # digits (llhttp checks): sent on as one canonical number
            value = value.strip(b" \t")
            req.cl = b"%d" % int(value) if value.isdigit() else value
        elif kind == H_TE:
            if req.te or value.strip(b" \t").lower() != b"chunked":
                req.te_other = True  # a coding we would have to undo: 501
            req.te = True
        elif kind == H_CONNECTION:
            if req.conn_tokens is None:
                req.conn_tokens = [value]
            else:
                req.conn_tokens.append(value)
        elif kind == H_XFF:
            if req.xff is None:
                req.xff = [value]
            else:
                req.xff.append(value)
        elif kind == H_HOPS:
            value = value.strip()
            req.hops = int(value) if value.isdigit() and len(value) < 6 else 0
        elif kind == H_EXPECT:
            req.expect = value.strip().lower() == b"100-continue"
        elif kind == H_UPGRADE:
            req.upgrade = value if req.upgrade is None else req.upgrade + b", " + value
        elif kind >= H_EDGE:  # only an edge's table maps these
            self.sc.edge.header(req, kind, name, value)  # type: ignore[union-attr]
        # H_HOP: dropped

    def on_headers_complete(self) -> None:
        if self.closed:
            raise _Stop
        self.in_head = False
        self.head_bytes = 0
        sc = self.sc
        parser = self.parser
        req = self.req
        if req.hsize + len(req.url) > sc.max_header_bytes:
            raise _Reject(431, "header too large", f"over {sc.max_header_bytes} bytes")
        req.method = parser.get_method()
        req.keep_alive = parser.should_keep_alive()
        version = parser.get_http_version()
        if version[:2] != "1.":
            raise _Reject(400, "bad request", f"HTTP/{version} is not supported")
        req.http10 = version == "1.0"
        has_body = req.has_body
        # llhttp stops at an upgrade head whatever the version: the bytes after it are ours.
        stops = parser.should_upgrade()
        if stops and req.http10 and req.method != b"CONNECT":
            # RFC 9110 7.8: Upgrade in HTTP/1.0 is ignored, so this is a plain request; but
            # the parser skipped its body, so one with a body cannot be served (400, as 1.1).
            if has_body:
                raise _Reject(400, "bad request", "an Upgrade request cannot carry a body")
            req.upgrading = False
        else:
            req.upgrading = stops
        req.expect = req.expect and has_body and not req.http10
        if sc.edge is not None:  # the client's lane headers never count; a verified token does
            sc.edge.settle(req)
        plan = decide(sc.table, req, max_hops=sc.max_hops, hops_header=sc.hops_header)
        if isinstance(plan, Forward):
            wire = upstream_head(sc.table, req, plan, self.peer, sc.hops_line[req.hops])
        else:
            wire = b""
        ex = Exchange(self, sc, req, plan, wire)
        self.parsing = ex
        if req.upgrading:
            self.tunnel = ex
            ex.keep_alive = False  # whatever the answer, nothing is parsed after it
        elif stops:  # HTTP/1.0 Upgrade ignored: answered, then closed; what follows dropped
            self.tunnel = _DISCARD
            ex.keep_alive = False
        if not has_body:  # llhttp completes the message right after this callback
            ex.client_done = True
            ex.replayable = req.replayable
        if self.cur is None:
            self.cur = ex
            ex.start()
        else:
            queue = self.queue
            if queue is None:
                queue = self.queue = deque()
            queue.append(ex)
            self.block(B_PIPE)
            if len(queue) >= MAX_PIPELINED:
                ex.keep_alive = False
                raise _Stop
        if isinstance(plan, Refusal) and plan.close:
            raise _Stop  # its answer closes the connection: parse nothing after it

    def on_body(self, body: bytes) -> None:
        self.body_fed = True
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
            self.sc.metrics.observe("-", "-", "-", status, self.sc.loop.time() - self.req.started)
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
