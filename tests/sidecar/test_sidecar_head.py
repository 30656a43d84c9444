"""A response to HEAD has no body, whatever the upstream sends after its head.

aiohttp's StreamResponse (and other servers) write a body to HEAD anyway. If the sidecar put such
a connection back in its pool, the stray bytes would be read as the next request's response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sidecar_helpers import Loop, connect, read_response, start_sidecar, topology

_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _RudeUpstream(asyncio.Protocol):
    """Answers HEAD with a head, and sends the 5 body bytes only once the next request arrives
    on the same connection, followed by that request's real answer: deterministic, no timing."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buf = b""
        self.owed = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            if head.startswith(b"HEAD "):
                self.transport.write(_HEAD)
                self.owed = b"hello"
            else:
                self.transport.write(self.owed + _OK)
                self.owed = b""


@pytest.fixture
def rude(tmp_path: Path) -> Iterator[Any]:
    loop = Loop()

    async def serve() -> asyncio.AbstractServer:
        return await asyncio.get_running_loop().create_server(_RudeUpstream, "127.0.0.1", 0)

    server = loop.run(serve())
    port = server.sockets[0].getsockname()[1]
    sc = start_sidecar(tmp_path, topology(reviews={"baseline": [f"127.0.0.1:{port}"]}))
    try:
        yield sc
    finally:
        sc.stop()
        server.close()
        loop.close()


def test_a_body_sent_after_a_head_response_never_reaches_the_next_request(rude: Any) -> None:
    with connect(rude.proxy) as sock:
        for _ in range(3):
            sock.sendall(b"HEAD / HTTP/1.1\r\nHost: reviews\r\n\r\n")
            status, headers, _ = read_response(sock, head=True)
            assert status == 200 and headers["content-length"] == "5"
            sock.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
            status, _, body = read_response(sock)
            assert (status, body) == (200, b"ok")
