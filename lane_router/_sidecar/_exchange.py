"""One request/response exchange: endpoint choice, fallback, streaming both ways, timeouts.

An exchange is created when a request head is complete and becomes active when its client
connection has finished the previous one (pipelining). It owns the upstream connection while
active and gives it back to the endpoint's pool when both messages are complete.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

from lane_router._sidecar._http import (
    B_PENDING,
    CONTINUE,
    LAST_CHUNK,
    drop_connection_named,
    error_response,
    reason_phrase,
)
from lane_router._sidecar._upstream import UpstreamConnection

if TYPE_CHECKING:
    from lane_router._sidecar._downstream import ClientConnection
    from lane_router._sidecar._server import Sidecar
    from lane_router._sidecar._table import EndpointState, Route

__all__ = ["Exchange"]

log = logging.getLogger("lane_router.sidecar")

PENDING_LIMIT = 256 * 1024
_CLOSE = b"connection: close\r\n"
_KEEP_ALIVE = b"connection: keep-alive\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"


class Exchange:
    __slots__ = (
        "asked",
        "chunk_out",
        "chunked_up",
        "client_10",
        "client_done",
        "conn",
        "connect_deadline",
        "dead",
        "done",
        "ep",
        "err",
        "expect",
        "head",
        "idle_deadline",
        "is_head",
        "keep_alive",
        "lane",
        "last_error",
        "pending",
        "pending_size",
        "replayable",
        "replayed",
        "response_started",
        "route",
        "sc",
        "served_by",
        "service",
        "started",
        "status",
        "task",
        "total_deadline",
        "touched",
        "tried",
        "up",
    )

    def __init__(self, conn: ClientConnection, started: float) -> None:
        self.conn = conn
        self.sc: Sidecar = conn.sc
        self.started = started
        self.service = "-"  # metrics label: a topology name or "-"
        self.asked: str | None = None  # what the client named, for an unknown service
        self.lane = "-"
        self.served_by = "-"
        self.route: Route | None = None
        self.head = b""
        self.err: tuple[int, str, str | None] | None = None
        self.keep_alive = True
        self.client_10 = False
        self.is_head = False
        self.expect = False
        self.chunked_up = False
        self.replayable = True
        self.replayed = False
        self.client_done = False
        self.pending: list[bytes] | None = None
        self.pending_size = 0
        self.up: UpstreamConnection | None = None
        self.ep: EndpointState | None = None
        self.tried: list[EndpointState] | None = None
        self.task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.status = 0
        self.response_started = False
        self.chunk_out = False
        self.done = False
        self.dead = False
        self.touched = False
        self.connect_deadline = math.inf
        self.idle_deadline = math.inf
        self.total_deadline = math.inf

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Become the connection's active exchange."""
        if self.err is not None:
            status, reason, detail = self.err
            self.reply_error(status, reason, detail)
            return
        sc = self.sc
        now = sc.loop.time()
        self.idle_deadline = now + sc.idle_timeout
        self.total_deadline = self.started + sc.request_timeout
        self.acquire(now)

    def start_safely(self) -> None:
        try:
            if not self.dead:
                self.start()
        except Exception as exc:
            self.internal(exc)

    def acquire(self, now: float) -> None:
        """Pick an endpoint (fallback order, round robin, healthy first) and get a connection."""
        tried = self.tried
        ep = None
        for pool in self.route.pools:  # type: ignore[union-attr]
            ep = pool.pick(now, tried)
            if ep is not None:
                self.served_by = pool.lane
                break
        else:
            # No healthy endpoint in any candidate lane: try the ejected ones anyway (in the
            # same order), as Envoy's panic mode does, so a recovered upstream is used at once.
            for pool in self.route.pools:  # type: ignore[union-attr]
                for cand in pool.endpoints:
                    if tried is None or cand not in tried:
                        ep = cand
                        self.served_by = pool.lane
                        break
                if ep is not None:
                    break
            if ep is None:
                self.reply_error(503, "no healthy endpoint", self.last_error)
                return
        self.ep = ep
        idle = ep.idle
        while idle:
            up = idle.pop()
            if not up.closed:
                self.attach(up, True)
                return
        self.connect_deadline = now + self.sc.connect_timeout
        self.task = self.sc.loop.create_task(self._connect(ep))

    async def _connect(self, ep: EndpointState) -> None:
        sc = self.sc
        try:
            _, up = await sc.loop.create_connection(
                lambda: UpstreamConnection(ep), ep.host, ep.port
            )
        except asyncio.CancelledError:
            return  # the connect timeout has answered already
        except OSError as exc:
            if self.task is None or self.done or self.dead:
                return
            self.task = None
            try:
                now = sc.loop.time()
                self.last_error = f"connect to {ep.label}: {exc.strerror or exc}"
                sc.eject(ep, now, self.last_error)
                if self.tried is None:
                    self.tried = [ep]
                else:
                    self.tried.append(ep)
                self.acquire(now)  # nothing was sent: try the next endpoint or lane
            except Exception as bug:
                self.internal(bug)
            return
        except Exception as bug:
            self.task = None
            self.internal(bug)
            return
        self.task = None
        if self.done or self.dead:
            sc.release(up)
            return
        try:
            self.attach(up, False)
        except Exception as bug:
            self.internal(bug)

    def attach(self, up: UpstreamConnection, reused: bool) -> None:
        self.up = up
        up.begin(self, reused)
        pending = self.pending
        if pending:
            data = [self.head, *pending]
            self.pending = None
            self.pending_size = 0
            self.conn.unblock(B_PENDING)
            if self.client_done and self.chunked_up:
                data.append(LAST_CHUNK)
            up.transport.writelines(data)
        elif self.client_done and self.chunked_up:
            up.transport.write(self.head + LAST_CHUNK)
        else:
            up.transport.write(self.head)  # the common case: one send, no iovec
        if self.expect and not self.client_done:
            self.expect = False
            self.conn.transport.write(CONTINUE)

    # -- request body (from the client) ---------------------------------------------------

    def client_body(self, body: bytes) -> None:
        self.touched = True
        self.replayable = False
        up = self.up
        if self.chunked_up:
            pieces: tuple[bytes, ...] = (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            pieces = (body,)
        if up is not None:
            up.transport.writelines(pieces)
        elif not (self.done or self.dead or self.err):
            if self.pending is None:
                self.pending = list(pieces)
            else:
                self.pending += pieces
            self.pending_size += len(body)
            if self.pending_size > PENDING_LIMIT:
                self.conn.block(B_PENDING)

    def client_finished(self) -> None:
        self.client_done = True
        up = self.up
        if up is not None and self.chunked_up:
            up.transport.write(LAST_CHUNK)

    # -- response (from the upstream) -----------------------------------------------------

    def response_head(self, up: UpstreamConnection, status: int) -> None:
        self.status = status
        self.response_started = True
        headers = up.headers
        if up.conn_tokens is not None:
            headers = drop_connection_named(headers, up.conn_tokens)
        keep = self.keep_alive and self.client_done and not self.sc.draining
        if self.is_head or status == 204 or status == 304 or up.has_cl:
            pass
        elif self.client_10:
            keep = False  # chunked or close-delimited upstream: close-delimited to HTTP/1.0
        else:
            self.chunk_out = True
            headers.append(_CHUNKED)
        if not keep:
            headers.append(_CLOSE)
        elif self.client_10:
            headers.append(_KEEP_ALIVE)
        self.keep_alive = keep
        up.out.append(
            b"HTTP/1.1 %d %s\r\n%s\r\n"
            % (status, up.reason or reason_phrase(status), b"".join(headers))
        )
        if self.is_head:
            # A response to HEAD has no body, yet some servers send one anyway (aiohttp's
            # StreamResponse does); on a reused connection those bytes would be read as the
            # next request's response. HEAD is rare: never reuse its connection.
            self.response_complete(up, False)

    def response_complete(self, up: UpstreamConnection, reusable: bool | None = None) -> None:
        if reusable is None:
            reusable = up.parser.should_keep_alive()
        if self.chunk_out:
            up.out.append(LAST_CHUNK)
        up.flush()
        self.up = None
        up.ex = None
        ep = up.ep
        ep.fails = 0
        if self.client_done and reusable and not up.closed:
            self.sc.release(up)
        else:
            up.close()
        self.finish(self.status)

    def upstream_lost(self, up: UpstreamConnection, exc: Exception | None) -> None:
        self.up = None
        up.ex = None
        if self.done or self.dead:
            return
        sc = self.sc
        if not self.response_started:
            detail = f"{up.ep.label}: {exc or 'connection closed before a response'}"
            if not up.got_bytes and self.replayable:
                # Nothing was answered and the request has no body, so it can be sent again
                # (as Envoy's retry_on reset does). A pooled connection closed under us is
                # retried as is; a fresh one means the endpoint is going away: eject it and
                # let the walk pick the next endpoint or lane.
                now = sc.loop.time()
                if up.reused and not self.replayed:
                    self.replayed = True
                else:
                    self.last_error = detail
                    sc.metrics.upstream_resets += 1
                    if up.ep.healthy(now):
                        sc.eject(up.ep, now, detail)
                    if self.tried is None:
                        self.tried = [up.ep]
                    else:
                        self.tried.append(up.ep)
                self.acquire(now)
                return
            if not up.reused:
                sc.eject(up.ep, sc.loop.time(), detail)
            sc.metrics.upstream_resets += 1
            self.reply_error(502, "upstream reset", detail)
            return
        sc.metrics.upstream_resets += 1
        self.abort(self.status)

    def upstream_bad(self, detail: str) -> None:
        if self.done or self.dead:
            return
        up = self.up
        self.up = None
        if up is not None:
            up.ex = None
            up.close()
        if self.response_started:
            self.abort(self.status)
        else:
            self.reply_error(502, "bad response", detail)

    # -- ending ---------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Called by the sidecar's timer sweep while this exchange is active."""
        if self.task is not None and now >= self.connect_deadline:
            self.task.cancel()
            self.task = None
            ep = self.ep
            detail = f"no connection to {ep.label if ep else '?'} in {self.sc.connect_timeout}s"
            if ep is not None:
                self.sc.eject(ep, now, detail)
            self.reply_error(504, "connect timeout", detail)
        elif now >= self.total_deadline:
            self.reply_error(504, "request timeout", f"over {self.sc.request_timeout}s")
        elif self.touched:
            self.touched = False
            self.idle_deadline = now + self.sc.idle_timeout
        elif now >= self.idle_deadline:
            self.reply_error(504, "idle timeout", f"nothing for {self.sc.idle_timeout}s")

    def reply_error(self, status: int, reason: str, detail: str | None = None) -> None:
        """Answer with the proxy's own JSON error; mid-response, the only honest move is abort."""
        if self.done or self.dead:
            return
        self._drop_upstream()
        if self.response_started:
            self.abort(self.status)
            return
        conn = self.conn
        keep = self.keep_alive and self.client_done and not self.sc.draining
        self.keep_alive = keep
        self.status = status
        if not conn.closed:
            conn.transport.write(
                error_response(
                    status,
                    reason,
                    service=self.asked if self.service == "-" else self.service,
                    lane=None if self.lane == "-" else self.lane,
                    close=not keep,
                    head_only=self.is_head,
                    detail=detail,
                )
            )
        self.finish(status)

    def internal(self, exc: BaseException) -> None:
        """A bug: answer 502 'internal' (never a bare 500), count it, keep the process up."""
        self.sc.metrics.internal_errors += 1
        log.error("internal error on %s (lane %s)", self.service, self.lane, exc_info=exc)
        try:
            self.keep_alive = False
            self.reply_error(502, "internal", type(exc).__name__)
        except Exception:
            log.exception("internal error while answering an internal error")
            self.conn.abort()

    def abort(self, status: int) -> None:
        self._drop_upstream()
        self.keep_alive = False
        self.finish(status or 502)
        self.conn.abort()

    def client_lost(self) -> None:
        """The client went away: free the upstream side and record it."""
        if self.done or self.dead:
            return
        self.dead = True
        self._drop_upstream()
        if self.route is not None or self.err is not None:
            self._record(499)

    def _drop_upstream(self) -> None:
        up = self.up
        if up is not None:
            self.up = None
            up.ex = None
            up.close()  # mid-exchange: the connection's state is unknown
        task = self.task
        if task is not None:
            self.task = None
            task.cancel()

    def finish(self, status: int) -> None:
        if self.done:
            return
        self.done = True
        sc = self.sc
        now = sc.loop.time()
        sc.metrics.observe(self.service, self.lane, self.served_by, status, now - self.started)
        self.conn.exchange_done(self, now)

    def _record(self, status: int) -> None:
        sc = self.sc
        sc.metrics.observe(
            self.service, self.lane, self.served_by, status, sc.loop.time() - self.started
        )
