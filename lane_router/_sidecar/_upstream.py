"""One pooled keep-alive connection to an upstream endpoint (asyncio Protocol + httptools).

It parses responses and hands each piece to the exchange it currently serves; the response
head is built by the exchange, which knows the client. Everything written to the client during
one ``data_received`` goes out in one ``writelines`` (one syscall for a small response).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpResponseParser,
)

from lane_router._sidecar._http import (
    B_UPSTREAM,
    H_CL,
    H_CONNECTION,
    H_TE,
    H_UPGRADE,
    RESPONSE_HEADERS,
)
from lane_router._sidecar._ports import ExchangeSink
from lane_router._sidecar._table import EndpointState

__all__ = ["UpstreamConnection"]

_KINDS = RESPONSE_HEADERS
# A Content-Length body larger than this bypasses the parser once its head is parsed: the
# bytes go to the client as received (no per-chunk callback, no copy).
RAW_MIN = 65536


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "cl_value",
        "closed",
        "conn_tokens",
        "eof",
        "ep",
        "ex",
        "got_bytes",
        "has_cl",
        "head_done",
        "headers",
        "out",
        "parser",
        "raw_keep",
        "raw_left",
        "raw_want",
        "read_paused",
        "reason",
        "reused",
        "skip",
        "te",
        "te_other",
        "transport",
        "tunnel",
        "upgrade",
    )

    def __init__(self, ep: EndpointState) -> None:
        self.ep = ep
        self.transport: Any = None
        self.parser = HttpResponseParser(self)
        self.ex: ExchangeSink | None = None
        self.closed = False
        self.reused = False
        self.got_bytes = False
        self.read_paused = False
        self.out: list[bytes] = []
        self.headers: list[bytes] = []
        self.reason = b""
        self.conn_tokens: list[bytes] | None = None
        self.has_cl = False
        self.te = False
        self.te_other = False
        self.skip = False
        self.head_done = False
        self.cl_value = -1
        self.raw_want = -1  # body bytes still due when the parser is to be bypassed
        self.raw_left = 0  # body bytes still due while it is bypassed
        self.raw_keep = False
        self.upgrade: bytes | None = None
        self.tunnel = False  # after a 101: bytes go to the client as they come
        self.eof = False  # the upstream half-closed a tunnel

    # -- asyncio --------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:  # unsolicited bytes on an idle connection: it cannot be reused
            self.close()
            return
        ex.touched = True
        self.got_bytes = True
        if self.raw_left:
            self._raw(ex, data)
            return
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError as exc:
            ex.internal(exc.__context__ or exc)
            self.close()
            return
        except HttpParserError as exc:
            self.close()
            ex = self.ex
            if ex is not None:
                ex.upstream_bad(str(exc))
            return
        except HttpParserUpgrade as up:  # after a 101 head (handled in on_headers_complete)
            if self.tunnel:
                rest = data[int(up.args[0]) :]
                if rest and not ex.conn.closed:
                    ex.conn.transport.write(rest)
            else:
                self.close()
            return
        if self.out:
            self.flush()
        if self.raw_want > 0:  # the rest of this body skips the parser
            self.raw_left = self.raw_want
            self.raw_want = -1

    def _raw(self, ex: ExchangeSink, data: bytes) -> None:
        if self.tunnel:
            if not ex.conn.closed:
                ex.conn.transport.write(data)
            return
        left = self.raw_left
        n = len(data)
        conn = ex.conn
        if n < left:
            self.raw_left = left - n
            if not conn.closed:
                conn.transport.write(data)
            return
        self.raw_left = 0
        extra = n > left  # bytes past the response: this connection cannot be trusted again
        if not conn.closed:
            conn.transport.write(data[:left] if extra else data)
        self.parser = HttpResponseParser(self)
        ex.response_complete(self, self.raw_keep and not extra)

    def eof_received(self) -> bool | None:
        """In a tunnel a half-close is passed on to the client; otherwise the connection ends."""
        ex = self.ex
        if self.tunnel and ex is not None:
            self.eof = True
            return ex.tunnel_eof(False)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.ex
        if ex is None:
            with contextlib.suppress(ValueError):
                self.ep.idle.remove(self)
            return
        try:
            if self.tunnel:
                ex.tunnel_closed()
            elif self.head_done and not self.skip and not self.has_cl and not self.te:
                ex.response_complete(self)  # a close-delimited body ends with the connection
            else:
                ex.upstream_lost(self, exc)
        except Exception as bug:  # never let a bug escape into the loop's handler
            ex.internal(bug)

    def pause_writing(self) -> None:
        ex = self.ex
        if ex is not None:
            ex.conn.block(B_UPSTREAM)

    def resume_writing(self) -> None:
        ex = self.ex
        if ex is not None:
            ex.conn.unblock(B_UPSTREAM)

    # -- used by the exchange -------------------------------------------------------------

    def begin(self, ex: ExchangeSink, reused: bool) -> None:
        self.ex = ex
        self.reused = reused
        self.got_bytes = False
        self.head_done = False
        self.raw_left = 0
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def throttle(self, pause: bool) -> None:
        if pause != self.read_paused and not self.closed:
            self.read_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def flush(self) -> None:
        out = self.out
        ex = self.ex
        if ex is not None and not ex.conn.closed:
            if len(out) == 1:
                ex.conn.transport.write(out[0])
            elif len(out) == 2 and len(out[1]) < 16384:  # head + small body: one plain send
                ex.conn.transport.write(out[0] + out[1])
            else:
                ex.conn.transport.writelines(out)
        out.clear()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    # -- httptools ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.cl_value = -1
        self.raw_want = -1
        self.headers = []
        self.reason = b""
        self.conn_tokens = None
        self.has_cl = False
        self.te = False
        self.te_other = False
        self.head_done = False
        self.upgrade = None

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # trailers are not forwarded
        kind = _KINDS.get(name.lower())
        if kind is None:
            self.headers += (name, b": ", value, b"\r\n")
        elif kind == H_CL:
            self.has_cl = True
            value = value.strip()
            self.cl_value = int(value) if value.isdigit() and len(value) < 19 else -1
            self.headers += (name, b": ", value, b"\r\n")
        elif kind == H_TE:
            if self.te or value.strip(b" \t").lower() != b"chunked":
                self.te_other = True
            self.te = True
        elif kind == H_CONNECTION:
            if self.conn_tokens is None:
                self.conn_tokens = [value]
            else:
                self.conn_tokens.append(value)
        elif kind == H_UPGRADE:
            self.upgrade = value

    def on_headers_complete(self) -> None:
        self.head_done = True
        ex = self.ex
        if ex is None:
            return
        status = self.parser.get_status_code()
        if status == 101:
            if ex.req.upgrading:
                self.tunnel = True
                self.raw_left = -1  # data_received's raw branch: straight to the client
                ex.tunnel_open(self)
            else:  # the upstream is broken, not down: no ejection
                ex.upstream_bad("101 to a request that did not ask to upgrade")
            return
        if status < 200:  # interim responses are this hop's business (Expect is not forwarded)
            self.skip = True
            return
        if self.te_other:  # e.g. "gzip, chunked": forwarding it de-chunked would corrupt it
            ex.upstream_bad("unsupported transfer-encoding from the upstream")
            return
        ex.response_head(self, status)
        if (
            self.cl_value > RAW_MIN
            and self.ex is ex
            and not ex.chunk_out
            and not ex.is_head
            and status != 204
            and status != 304
        ):
            self.raw_want = self.cl_value
            self.raw_keep = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        if ex is None or self.skip:
            return
        if self.raw_want > 0:
            self.raw_want -= len(body)
        if ex.chunk_out:
            self.out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.out.append(body)

    def on_message_complete(self) -> None:
        self.raw_want = -1
        if self.tunnel:  # the 101's head ends its message; the tunnel goes on
            return
        if self.skip:
            self.skip = False
            self.head_done = False
            return
        ex = self.ex
        if ex is not None:
            ex.response_complete(self)
