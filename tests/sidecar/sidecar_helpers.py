"""Real parts for the sidecar tests: aiohttp upstreams on a background loop, the sidecar as a
subprocess (``python -m lane_router.cli sidecar``) on ephemeral ports, stopped by its PID."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

DEADLINE = 15.0


def wait_for(cond: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Loop:
    """One asyncio loop on a daemon thread, for every upstream of a test."""

    def __init__(
        self, factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    ) -> None:
        self.loop = factory()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = DEADLINE) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Upstream:
    """A real aiohttp app that says who it is and what it received."""

    name: str
    loop: Loop
    host: str = "127.0.0.1"
    port: int = 0
    peers: set[int] = field(default_factory=set)
    requests: int = 0
    sent: int = 0
    received: int = 0
    paths: list[str] = field(default_factory=list)
    _runner: Any = None

    def start(self) -> Upstream:
        self.loop.run(self._start())
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=1 << 40)
        app.router.add_route("*", "/stream", self._stream)
        app.router.add_route("*", "/upload", self._upload)
        app.router.add_route("*", "/sleep", self._sleep)
        app.router.add_route("*", "/drip", self._drip)
        app.router.add_route("*", "/hop", self._hop)
        app.router.add_route("GET", "/ws", self._ws)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._runner is not None:
            self.loop.run(self._runner.cleanup())
            self._runner = None

    @property
    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _seen(self, request: web.Request) -> None:
        self.requests += 1
        self.paths.append(request.path_qs)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add(peer[1])

    async def _echo(self, request: web.Request) -> web.Response:
        self._seen(request)
        body = await request.read()
        return web.json_response(
            {
                "served": self.name,
                "method": request.method,
                "path": request.path_qs,
                "version": f"{request.version.major}.{request.version.minor}",
                "headers": [[k.lower(), v] for k, v in request.raw_headers_decoded()],
                "body_len": len(body),
            }
        )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """``n`` bytes generated on the fly; ``cl=1`` sends Content-Length, else chunked."""
        self._seen(request)
        n = int(request.query.get("n", "0"))
        resp = web.StreamResponse()
        if request.query.get("cl") == "1":
            resp.content_length = n
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        block = b"x" * 65536
        left = n
        while left > 0:
            piece = block if left >= len(block) else block[:left]
            await resp.write(piece)
            left -= len(piece)
            self.sent += len(piece)
        await resp.write_eof()
        return resp

    async def _upload(self, request: web.Request) -> web.Response:
        self._seen(request)
        stall = float(request.query.get("stall", "0"))
        if stall:
            await asyncio.sleep(stall)  # the body piles up before us, not in the sidecar
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
            self.received += len(chunk)
        return web.json_response({"served": self.name, "received": total})

    async def _sleep(self, request: web.Request) -> web.Response:
        self._seen(request)
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.json_response({"served": self.name, "slept": True})

    async def _drip(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(int(request.query.get("n", "100"))):
            await resp.write(b".")
            await asyncio.sleep(float(request.query.get("every", "0.05")))
        await resp.write_eof()
        return resp

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        """A WebSocket that answers each message with ``<name>:<message>`` (bytes: echoed)."""
        self._seen(request)
        ws = web.WebSocketResponse(max_msg_size=1 << 24)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT:
                await ws.send_str(f"{self.name}:{msg.data}")
            elif msg.type == web.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def _hop(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(
            text="hop",
            headers={
                "Keep-Alive": "timeout=5",
                "Connection": "X-Private, keep-alive",
                "X-Private": "secret",
                "Proxy-Authenticate": "Basic",
                "X-Public": "yes",
            },
        )


def raw_headers_decoded(self: web.Request) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw_headers]


web.Request.raw_headers_decoded = raw_headers_decoded  # type: ignore[attr-defined]


@dataclass
class SidecarProc:
    proc: subprocess.Popen[bytes]
    proxy: tuple[str, int]
    admin: tuple[str, int]
    path: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def metrics(self) -> str:
        return http_get(self.admin, "/metrics")[2].decode()

    def routes(self) -> dict[str, Any]:
        return json.loads(http_get(self.admin, "/routes")[2])

    def generation(self) -> int:
        return int(json.loads(http_get(self.admin, "/readyz")[2])["generation"])

    def write(self, topology: dict[str, Any] | str) -> None:
        text = topology if isinstance(topology, str) else yaml.safe_dump(topology)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)  # a new inode: the watcher sees it even within one mtime tick

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> int:
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_sidecar(
    tmp_path: Path,
    topology: dict[str, Any],
    *args: str,
    listen: str = "127.0.0.1:0",
) -> SidecarProc:
    path = tmp_path / "lanes.yaml"
    path.write_text(yaml.safe_dump(topology))
    log = tmp_path / f"sidecar-{time.monotonic_ns()}.log"
    cmd = [
        sys.executable,
        "-m",
        "lane_router.cli",
        "sidecar",
        "-f",
        str(path),
        "--listen",
        listen,
        "--admin",
        "127.0.0.1:0",
        *args,
    ]
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    box: dict[str, bytes] = {}
    reader = threading.Thread(
        target=lambda: box.setdefault("line", proc.stdout.readline()), daemon=True
    )
    reader.start()
    reader.join(DEADLINE)
    line = box.get("line", b"").decode()
    if "ready" not in line:
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"sidecar did not start: {line!r}\n{log.read_text()}")
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    from lane_router._sidecar import parse_hostport

    return SidecarProc(
        proc,
        parse_hostport(fields["proxy"].split(",")[0]),
        parse_hostport(fields["admin"]),
        path,
        log,
    )


def connect(addr: tuple[str, int], timeout: float = DEADLINE) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(addr)
    return sock


class _Reader:
    """Buffered reads on a socket that keep no reference to it (``makefile`` would hold the
    socket open after ``close()``, so the peer would never see the connection end)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.sock: Any = None

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def readline(self) -> bytes:
        while (end := self.buf.find(b"\n")) < 0:
            if not self._fill():
                out = bytes(self.buf)
                self.buf.clear()
                return out
        out = bytes(self.buf[: end + 1])
        del self.buf[: end + 1]
        return out

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self.buf) < n) and self._fill():
            pass
        n = len(self.buf) if n < 0 else min(n, len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


# One buffer per socket (pipelined responses arrive together); the socket is only a weak key.
_readers: weakref.WeakKeyDictionary[socket.socket, _Reader] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (Content-Length, chunked or close-delimited)."""
    f = _readers.get(sock)
    if f is None:
        f = _readers[sock] = _Reader()
    f.sock = sock
    try:
        return _read_response(f, head)
    finally:
        f.sock = None


def _read_response(f: _Reader, head: bool) -> tuple[int, dict[str, str], bytes]:
    status_line = f.readline()
    if not status_line:
        raise ConnectionError("connection closed before a response")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if head or status in (204, 304) or 100 <= status < 200:
        return status, headers, b""
    if "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b""):
                    pass
                break
            parts.append(f.read(size))
            f.readline()
        body = b"".join(parts)
    else:
        body = f.read()
    return status, headers, body


def http_get(
    addr: tuple[str, int],
    path: str,
    host: str = "localhost",
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> tuple[int, dict[str, str], bytes]:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with connect(addr) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return read_response(sock, head=method == "HEAD")


def request(
    sc: SidecarProc,
    path: str = "/",
    host: str = "reviews",
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> tuple[int, dict[str, str], Any]:
    status, hdrs, body = http_get(sc.proxy, path, host, headers, method)
    ctype = hdrs.get("content-type", "")
    return status, hdrs, json.loads(body) if ctype.startswith("application/json") else body


def topology(**versions: dict[str, list[str]]) -> dict[str, Any]:
    """The test topology: feature-a, feature-b -> feature-a, strict hotfix."""
    return {
        "namespace": "shop",
        "lanes": {
            "feature-a": {},
            "feature-b": {"fallback": "feature-a"},
            "hotfix": {"strict": True},
        },
        "services": {name: {"port": 9080, "versions": lanes} for name, lanes in versions.items()},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
