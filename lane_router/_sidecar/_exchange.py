"""One request/response exchange: endpoint choice, fallback, streaming both ways, timeouts.

An exchange is created when a request head is complete and becomes active when its client
connection has finished the previous one (pipelining). It owns the upstream connection while
active and gives it back to the endpoint's pool when both messages are complete.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import cast

from lane_router._sidecar._decide import Forward, Refusal, RequestHead
from lane_router._sidecar._http import (
    B_PENDING,
    CONTINUE,
    LAST_CHUNK,
    drop_connection_named,
    error_response,
    reason_phrase,
)
from lane_router._sidecar._ports import Client, Proxy, Upstream
from lane_router._sidecar._table import EndpointState, Route
from lane_router._sidecar._upstream import UpstreamConnection

__all__ = ["Exchange"]

log = logging.getLogger("lanes.sidecar")

PENDING_LIMIT = 256 * 1024
_CLOSE = b"connection: close\r\n"
_KEEP_ALIVE = b"connection: keep-alive\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"


class _Retry:
    """The endpoint walk after a failure (rare, so kept off the exchange): endpoints tried,
    the last error (shown when every endpoint failed), whether a reset was replayed."""

    __slots__ = ("last_error", "replayed", "tried")

    def __init__(self) -> None:
        self.tried: list[EndpointState] = []
        self.last_error: str | None = None
        self.replayed = False


class Exchange:
    """One request in flight. What the request is (:class:`RequestHead`) and what it gets
    (:class:`Forward` or :class:`Refusal`) are decided before it exists; this holds only what
    changes while it runs: the upstream connection, body flow, response state, deadlines."""

    __slots__ = (
        "chunk_out",
        "client_done",
        "conn",
        "connect_deadline",
        "dead",
        "done",
        "ep",
        "idle_deadline",
        "keep_alive",
        "pending",
        "pending_size",
        "plan",
        "replayable",
        "req",
        "response_started",
        "retry",
        "sc",
        "served_by",
        "status",
        "task",
        "total_deadline",
        "touched",
        "up",
        "wire",
    )

    def __init__(
        self, conn: Client, sc: Proxy, req: RequestHead, plan: Forward | Refusal, wire: bytes
    ) -> None:
        self.conn = conn
        self.sc = sc
        self.req = req
        self.plan = plan
        self.wire = wire  # the head to send upstream (empty for a refusal)
        self.keep_alive = req.keep_alive and not (isinstance(plan, Refusal) and plan.close)
        self.served_by = "-"
        self.client_done = False
        self.replayable = False
        self.pending: list[bytes] | None = None
        self.pending_size = 0
        self.up: Upstream | None = None
        self.ep: EndpointState | None = None
        self.retry: _Retry | None = None
        self.task: asyncio.Task[None] | None = None
        self.status = 0
        self.response_started = False
        self.chunk_out = False
        self.done = False
        self.dead = False
        self.touched = False
        self.connect_deadline = math.inf
        self.idle_deadline = math.inf
        self.total_deadline = math.inf

    @property
    def service(self) -> str:
        return self.plan.service

    @property
    def lane(self) -> str:
        return self.plan.lane

    @property
    def is_head(self) -> bool:
        return self.req.method == b"HEAD"  # also our own errors must not send it a body

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Become the connection's active exchange."""
        plan = self.plan
        if isinstance(plan, Refusal):
            self.reply_error(plan.status, plan.reason, plan.detail)
            return
        sc = self.sc
        now = sc.loop.time()
        self.idle_deadline = now + sc.idle_timeout
        self.total_deadline = self.req.started + sc.request_timeout
        self.acquire(now, plan.route)

    def start_safely(self) -> None:
        try:
            if not self.dead:
                self.start()
        except Exception as exc:
            self.internal(exc)

    def acquire(self, now: float, route: Route) -> None:
        """Get a connection to the endpoint the route picks (its policy: fallback order,
        round robin, healthy first, then panic)."""
        retry = self.retry
        picked = route.pick(now, None if retry is None else retry.tried)
        if picked is None:
            detail = None if retry is None else retry.last_error
            self.reply_error(503, "no healthy endpoint", detail)
            return
        pool, ep = picked
        self.served_by = pool.lane
        self.ep = ep
        idle = ep.idle
        while idle:
            up = idle.pop()
            if not up.closed:
                self.attach(cast(Upstream, up), True)  # pools hold only these
                return
        self.connect_deadline = now + self.sc.connect_timeout
        self.task = self.sc.loop.create_task(self._connect(ep))

    def _again(self, now: float) -> None:
        """Walk on after a failure that sent nothing (only a forwarded exchange gets here)."""
        plan = self.plan
        if isinstance(plan, Forward):
            self.acquire(now, plan.route)

    def _failed(self, ep: EndpointState, detail: str) -> _Retry:
        retry = self.retry
        if retry is None:
            retry = self.retry = _Retry()
        retry.tried.append(ep)
        retry.last_error = detail
        return retry

    async def _connect(self, ep: EndpointState) -> None:
        sc = self.sc
        try:
            _, up = await sc.loop.create_connection(
                lambda: UpstreamConnection(ep), sc.resolved.get(ep.host, ep.host), ep.port
            )
        except asyncio.CancelledError:
            return  # the connect timeout has answered already
        except OSError as exc:
            if self.task is None or self.done or self.dead:
                return
            self.task = None
            try:
                now = sc.loop.time()
                detail = f"connect failed: {exc.strerror or type(exc).__name__}"
                sc.eject(ep, now, detail)  # the log line names the endpoint; the client never
                self._failed(ep, detail)
                self._again(now)  # nothing was sent: try the next endpoint or lane
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

    def attach(self, up: Upstream, reused: bool) -> None:
        self.up = up
        up.begin(self, reused)
        pending = self.pending
        chunked_end = self.client_done and self.req.te
        if pending and not self.req.upgrading:
            data = [self.wire, *pending]
            self.pending = None
            self.pending_size = 0
            self.conn.unblock(B_PENDING)
            if chunked_end:
                data.append(LAST_CHUNK)
            up.transport.writelines(data)
        elif chunked_end:
            up.transport.write(self.wire + LAST_CHUNK)
        else:
            up.transport.write(self.wire)  # the common case: one send, no iovec
        req = self.req
        if req.expect and not self.client_done:
            req.expect = False
            self.conn.transport.write(CONTINUE)

    # -- request body (from the client) ---------------------------------------------------

    def client_body(self, body: bytes) -> None:
        self.touched = True
        self.replayable = False
        up = self.up
        if self.req.te:
            pieces: tuple[bytes, ...] = (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            pieces = (body,)
        if up is not None:
            up.transport.writelines(pieces)
        elif not (self.done or self.dead or isinstance(self.plan, Refusal)):
            if self.pending is None:
                self.pending = list(pieces)
            else:
                self.pending += pieces
            self.pending_size += len(body)
            if self.pending_size > PENDING_LIMIT:
                self.conn.block(B_PENDING)

    def from_client(self, data: bytes) -> None:
        """Bytes after an Upgrade head: tunnelled once the upstream said 101, held (bounded:
        reading pauses) until then, dropped if the upgrade was refused or declined."""
        self.touched = True
        up = self.up
        if self.status == 101 and up is not None:
            up.transport.write(data)
        elif not (self.done or self.dead or self.response_started) and isinstance(
            self.plan, Forward
        ):
            if self.pending is None:
                self.pending = [data]
            else:
                self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > PENDING_LIMIT:
                self.conn.block(B_PENDING)

    def client_finished(self) -> None:
        self.client_done = True
        up = self.up
        if up is not None and self.req.te:
            up.transport.write(LAST_CHUNK)

    # -- response (from the upstream) -----------------------------------------------------

    def response_head(self, up: Upstream, status: int) -> None:
        self.status = status
        self.response_started = True
        headers = up.headers
        if up.conn_tokens is not None:
            headers = drop_connection_named(headers, up.conn_tokens)
        keep = self.keep_alive and self.client_done and not self.sc.draining
        is_head = self.req.method == b"HEAD"
        client_10 = self.req.http10
        if is_head or status == 204 or status == 304 or up.has_cl:
            pass
        elif client_10:
            keep = False  # chunked or close-delimited upstream: close-delimited to HTTP/1.0
        else:
            self.chunk_out = True
            headers.append(_CHUNKED)
        if not keep:
            headers.append(_CLOSE)
        elif client_10:
            headers.append(_KEEP_ALIVE)
        self.keep_alive = keep
        up.out.append(
            b"HTTP/1.1 %d %s\r\n%s\r\n"
            % (status, up.reason or reason_phrase(status), b"".join(headers))
        )
        if is_head:
            # A response to HEAD has no body, yet some servers send one anyway (aiohttp's
            # StreamResponse does); on a reused connection those bytes would be read as the
            # next request's response. HEAD is rare: never reuse its connection.
            self.response_complete(up, False)

    def tunnel_open(self, up: Upstream) -> None:
        """The upstream said 101 to our Upgrade: from now on both connections are one byte
        tunnel (backpressure both ways as for bodies, the idle timeout, cut at drain)."""
        self.status = 101
        self.response_started = True
        headers = up.headers
        if up.conn_tokens is not None:
            headers = drop_connection_named(headers, up.conn_tokens)
        upgrade = up.upgrade or self.req.upgrade or b""
        up.out.append(
            b"HTTP/1.1 101 %s\r\n%sconnection: upgrade\r\nupgrade: %s\r\n\r\n"
            % (up.reason or b"Switching Protocols", b"".join(headers), upgrade)
        )
        up.flush()
        pending = self.pending
        if pending:
            self.pending = None
            self.pending_size = 0
            up.transport.writelines(pending)
            self.conn.unblock(B_PENDING)
        if self.conn.eof:  # the client half-closed while the upgrade was pending
            self.tunnel_eof(True)

    def tunnel_eof(self, from_client: bool) -> bool | None:
        """One side of the tunnel half-closed: pass the FIN on (after the bytes buffered for
        the other side) and keep the other direction open until it ends too, or until
        ``--idle-timeout``. The return value is asyncio's for ``eof_received``."""
        up = self.up
        if self.done or self.dead or up is None:
            return None
        if up.eof and self.conn.eof:
            self.tunnel_closed()
            return None
        target = up.transport if from_client else self.conn.transport
        if target.is_closing() or not target.can_write_eof():
            self.tunnel_closed()
            return None
        target.write_eof()
        return True

    def tunnel_closed(self) -> None:
        """One side of the tunnel ended: end the other (after what it has buffered)."""
        if self.done or self.dead:
            return
        up = self.up
        if up is not None:
            self.up = None
            up.ex = None
            up.close()
        self.keep_alive = False
        self.finish(101)

    def response_complete(self, up: Upstream, reusable: bool | None = None) -> None:
        if reusable is None:
            reusable = up.parser.should_keep_alive()
        if self.chunk_out:
            up.out.append(LAST_CHUNK)
        up.flush()
        self.up = None
        up.ex = None
        ep = up.ep
        ep.fails = 0
        if self.client_done and reusable and not up.closed and not self.req.upgrading:
            self.sc.release(up)  # (a declined upgrade's connection may be in another state)
        else:
            up.close()
        self.finish(self.status)

    def upstream_lost(self, up: Upstream, exc: Exception | None) -> None:
        self.up = None
        up.ex = None
        if self.done or self.dead:
            return
        sc = self.sc
        if not self.response_started:
            detail = _reset_detail(exc)
            if not up.got_bytes and self.replayable:
                # Nothing was answered and the request has no body, so it can be sent again
                # (as Envoy's retry_on reset does). A pooled connection closed under us is
                # retried as is; a fresh one means the endpoint is going away: eject it and
                # let the walk pick the next endpoint or lane.
                now = sc.loop.time()
                retry = self.retry
                if up.reused and (retry is None or not retry.replayed):
                    if retry is None:
                        retry = self.retry = _Retry()
                    retry.replayed = True
                else:
                    sc.metrics.upstream_resets += 1
                    if up.ep.healthy(now):
                        sc.eject(up.ep, now, detail)
                    self._failed(up.ep, detail)
                self._again(now)
                return
            if not up.reused:
                sc.eject(up.ep, sc.loop.time(), detail)
            else:
                log.warning("upstream %s reset mid-request: %s", up.ep.label, detail)
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
            log.warning("bad response from %s: %s", up.ep.label, detail)
        if self.response_started:
            self.abort(self.status)
        else:
            self.reply_error(502, "bad response", detail)

    # -- ending ---------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Called by the sidecar's timer sweep while this exchange is active."""
        if self.status == 101:  # a tunnel: only the idle timeout applies
            if self.touched:
                self.touched = False
                self.idle_deadline = now + self.sc.idle_timeout
            elif now >= self.idle_deadline:
                log.info(
                    "closing a tunnel to %s idle for %ss", self.served_by, self.sc.idle_timeout
                )
                self.tunnel_closed()
            return
        if self.task is not None and now >= self.connect_deadline:
            self.task.cancel()
            self.task = None
            ep = self.ep
            detail = f"no connection in {self.sc.connect_timeout}s"
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
        plan = self.plan
        if not conn.closed:
            service = plan.service
            if service == "-" and isinstance(plan, Refusal):
                service = plan.asked  # type: ignore[assignment]
            conn.transport.write(
                error_response(
                    status,
                    reason,
                    service=None if service == "-" else service,
                    lane=None if plan.lane == "-" else plan.lane,
                    close=not keep,
                    head_only=self.req.method == b"HEAD",
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
        self._record(101 if self.status == 101 else 499)

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
        plan = self.plan
        sc.metrics.observe(plan.service, plan.lane, self.served_by, status, now - self.req.started)
        self.conn.exchange_done(self, now)

    def _record(self, status: int) -> None:
        sc = self.sc
        plan = self.plan
        sc.metrics.observe(
            plan.service, plan.lane, self.served_by, status, sc.loop.time() - self.req.started
        )


def _reset_detail(exc: Exception | None) -> str:
    """A client-facing reason for a lost upstream connection (no address: that is logged)."""
    if exc is None:
        return "connection closed before a response"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
