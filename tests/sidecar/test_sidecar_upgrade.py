"""Upgrade through the sidecar: a body with Upgrade is refused (the desync of issue 10), a
bodiless Upgrade is forwarded and a 101 becomes a byte tunnel (real aiohttp WebSocket client
and server, per lane), anything else ends the exchange and the connection."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any, Self

import aiohttp
import pytest
from sidecar_helpers import (
    Loop,
    SidecarProc,
    Upstream,
    connect,
    read_response,
    request,
    start_sidecar,
    topology,
    wait_for,
)

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: reviews\r\n\r\n"


class RawUpstream:
    """A raw asyncio upstream on 127.0.0.1 (subclasses answer in ``_serve``): for answers an
    HTTP server library would not send."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        async def go() -> None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]

        self.loop.run(go())
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


class Always101(RawUpstream):
    """A broken upstream that answers every request with ``101`` and then echoes bytes."""

    def __init__(self, loop: Loop) -> None:
        super().__init__(loop)
        self.accepted = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n")
            writer.write(b"Upgrade: foo\r\n\r\n")
            while data := await reader.read(65536):
                writer.write(data)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class HalfCloser(RawUpstream):
    """An upstream that answers ``101`` and then half-closes: on ``/client-first`` it reads to
    the client's FIN and answers after it; on ``/upstream-first`` it sends its FIN first and
    then keeps reading (what it got is in :attr:`got`)."""

    def __init__(self, loop: Loop) -> None:
        super().__init__(loop)
        self.got: list[bytes] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n")
            writer.write(b"Upgrade: foo\r\n\r\n")
            if head.startswith(b"GET /upstream-first "):
                writer.write(b"bye")
                writer.write_eof()
                self.got.append(await reader.read())  # to the client's FIN
            else:
                writer.write(b"got:" + await reader.read())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture(scope="module")
def half(tmp_path_factory: Any) -> Iterator[tuple[SidecarProc, HalfCloser]]:
    loop = Loop()
    closer = HalfCloser(loop).start()
    topo = topology(half={"baseline": [f"127.0.0.1:{closer.port}"]})
    sc = start_sidecar(tmp_path_factory.mktemp("half"), topo, "--idle-timeout", "10")
    try:
        yield sc, closer
    finally:
        sc.stop()
        closer.stop()
        loop.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: Any) -> Iterator[tuple[SidecarProc, Upstream, Upstream, Loop]]:
    loop = Loop()
    base, fa = Upstream("baseline", loop).start(), Upstream("feature-a", loop).start()
    bad = Always101(loop).start()
    topo = topology(
        reviews={"baseline": [base.endpoint], "feature-a": [fa.endpoint]},
        weird={"baseline": [f"127.0.0.1:{bad.port}"]},
    )
    sc = start_sidecar(tmp_path_factory.mktemp("upgrade"), topo, "--idle-timeout", "2")
    try:
        yield sc, base, fa, loop
    finally:
        sc.stop()
        base.stop()
        fa.stop()
        bad.stop()
        loop.close()


def _drain(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: 41\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n29\r\n"],
    ids=["content-length", "chunked"],
)
def test_upgrade_with_a_body_is_400_and_nothing_is_smuggled(env: Any, framing: bytes) -> None:
    sc, base, _, _ = env
    before = list(base.paths)
    with connect(sc.proxy) as sock:
        sock.sendall(
            b"POST /x HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
            + framing
            + SMUGGLED
        )
        status, headers, body = read_response(sock)
        assert status == 400 and headers["connection"] == "close"
        assert "Upgrade" in json.loads(body)["detail"]
        assert _drain(sock) == b""  # closed: the body is never parsed as a request
    assert base.paths == before  # nothing reached the upstream


def test_bytes_after_a_declined_upgrade_are_never_a_request(env: Any) -> None:
    """The upstream answers the bodiless Upgrade with 200 (no upgrade): the exchange ends,
    the connection closes, and what the client sent after the head is dropped."""
    sc, base, _, _ = env
    before = len(base.paths)
    with connect(sc.proxy) as sock:
        sock.sendall(
            b"GET /plain HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"
            + SMUGGLED
        )
        status, headers, body = read_response(sock)
        assert status == 200 and headers["connection"] == "close"
        sent = dict(json.loads(body)["headers"])
        assert sent["upgrade"] == "foo" and sent["connection"].lower() == "upgrade"
        assert _drain(sock) == b""
    assert base.paths[before:] == ["/plain"]


def test_a_101_to_a_plain_request_is_502_and_the_endpoint_stays(env: Any) -> None:
    sc, _, _, _ = env
    for _ in range(3):
        status, _, body = request(sc, "/", host="weird")
        assert (status, body["reason"]) == (502, "bad response")
        assert "127.0.0.1" not in json.dumps(body)  # internal addresses stay in the log
    [ep] = sc.routes()["services"]["weird"]["versions"]["baseline"]
    assert ep["healthy"] and ep["consecutive_failures"] == 0


@pytest.mark.parametrize(("lane", "served"), [(None, "baseline"), ("feature-a", "feature-a")])
def test_websocket_per_lane(env: Any, lane: str | None, served: str) -> None:
    sc, _, _, loop = env

    async def talk() -> list[Any]:
        headers = {"Host": "reviews", **({"x-lane": lane} if lane else {})}
        url = f"http://{sc.proxy[0]}:{sc.proxy[1]}/ws"
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, headers=headers, max_msg_size=1 << 24) as ws,
        ):
            got: list[Any] = []
            for text in ("one", "two"):
                await ws.send_str(text)
                got.append((await ws.receive(timeout=10)).data)
            big = bytes(range(256)) * 16384  # 4 MiB: backpressure both ways
            await ws.send_bytes(big)
            echoed = (await ws.receive(timeout=30)).data
            got.append(echoed == big)
            await ws.close()
            return got

    assert loop.run(talk(), timeout=60) == [f"{served}:one", f"{served}:two", True]
    status, _, _ = request(sc, "/", headers={"x-lane": lane} if lane else None)
    assert status == 200  # the sidecar goes on serving


def test_an_idle_tunnel_is_closed(env: Any) -> None:
    sc, _, _, loop = env

    async def idle() -> Any:
        url = f"http://{sc.proxy[0]}:{sc.proxy[1]}/ws"
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, headers={"Host": "reviews"}, autoping=False) as ws,
        ):
            return (await ws.receive(timeout=15)).type  # --idle-timeout 2 ends it first

    assert loop.run(idle(), timeout=20) in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE)


def test_a_tunnel_lives_through_the_drain_then_is_cut(
    loop: Loop, upstreams: Any, sidecars: Any
) -> None:
    base = upstreams("baseline")
    sc = sidecars(topology(reviews={"baseline": [base.endpoint]}), "--drain-timeout", "1")

    async def through_sigterm() -> tuple[str, Any]:
        url = f"http://{sc.proxy[0]}:{sc.proxy[1]}/ws"
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, headers={"Host": "reviews"}) as ws,
        ):
            await ws.send_str("before")
            assert (await ws.receive(timeout=10)).data == "baseline:before"
            os.kill(sc.pid, signal.SIGTERM)
            await ws.send_str("during")  # draining: the tunnel is in flight, it goes on
            during = (await ws.receive(timeout=10)).data
            end = (await ws.receive(timeout=15)).type  # cut at --drain-timeout
            return during, end

    during, end = loop.run(through_sigterm(), timeout=30)
    assert during == "baseline:during"
    assert end in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
    assert sc.proc.wait(10) == 0


def _open_tunnel(sc: SidecarProc, path: bytes) -> socket.socket:
    sock = connect(sc.proxy)
    sock.sendall(
        b"GET " + path + b" HTTP/1.1\r\nHost: half\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    return sock


def test_a_client_half_close_passes_through_the_tunnel(half: Any) -> None:
    """The client sends its FIN; the upstream sees it and still answers, and that answer
    reaches the client (before: the sidecar closed both sides at the client's FIN)."""
    sc, _ = half
    with _open_tunnel(sc, b"/client-first") as sock:
        sock.sendall(b"ping")
        sock.shutdown(socket.SHUT_WR)
        assert _drain(sock) == b"got:ping"


def test_an_upstream_half_close_passes_through_the_tunnel(half: Any) -> None:
    sc, closer = half
    before = len(closer.got)
    with _open_tunnel(sc, b"/upstream-first") as sock:
        assert _drain(sock) == b"bye"  # the upstream's FIN reached the client
        sock.sendall(b"late")  # the other direction is still open
        sock.shutdown(socket.SHUT_WR)
        wait_for(lambda: len(closer.got) > before, "the upstream to read to the client's FIN")
    assert closer.got[before:] == [b"late"]


def test_http10_upgrade_is_ignored(env: Any) -> None:
    """RFC 9110 7.8: Upgrade in HTTP/1.0 is ignored: a plain request, answered, then the
    connection closes (the parser stopped at the head: what follows is never parsed)."""
    sc, base, _, _ = env
    before = len(base.paths)
    with connect(sc.proxy) as sock:
        sock.sendall(
            b"GET /old HTTP/1.0\r\nHost: reviews\r\nConnection: Upgrade, keep-alive\r\n"
            b"Upgrade: foo\r\n\r\n" + SMUGGLED
        )
        status, headers, body = read_response(sock)
        assert status == 200 and headers["connection"] == "close"
        sent = dict(json.loads(body)["headers"])
        assert "upgrade" not in sent and "upgrade" not in sent.get("connection", "").lower()
        assert _drain(sock) == b""
    assert base.paths[before:] == ["/old"]


def test_http10_upgrade_with_a_body_is_400(env: Any) -> None:
    sc, base, _, _ = env
    before = len(base.paths)
    with connect(sc.proxy) as sock:
        sock.sendall(
            b"POST /old HTTP/1.0\r\nHost: reviews\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
            b"Content-Length: 41\r\n\r\n" + SMUGGLED
        )
        status, headers, _ = read_response(sock)
        assert status == 400 and headers["connection"] == "close"
        assert _drain(sock) == b""
    assert base.paths[before:] == []
