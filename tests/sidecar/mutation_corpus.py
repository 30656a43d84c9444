"""A seeded mutation corpus of hostile HTTP/1.1 requests, and the client and upstream that judge
a proxy by it. Used by the in-suite fuzz (a few thousand requests) and by ``bench/fuzz_proxy.py``
(a million, side by side with Envoy).

Each request is one seed (a request shape the issue-10 review tried by hand: Upgrade with a body,
endless trailers, duplicate framing, pipelining, HTTP/0.9, ...) with a few random mutations
(byte flips, insertions, deleted or duplicated lines, LF for CRLF, framing headers added). Every
path carries a marker; the upstream records the marker of each request it *answers* and echoes it
in ``x-path``, so "an upstream request the client did not send" shows up as an upstream answer
that no client received (a desync, work after a close, a smuggled body).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

__all__ = ["FuzzUpstream", "Tally", "corpus", "run_corpus"]

_SEEDS: list[bytes] = [
    b"GET /m/{id} HTTP/1.1\r\nHost: reviews\r\nx-lane: feature-a\r\n\r\n",
    b"GET /m/{id} HTTP/1.1\r\nHost: reviews\r\nbaggage: k=v, lane=feature-a;p=1\r\n\r\n",
    b"POST /m/{id} HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /m/{id} HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"POST /m/{id} HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
    b"Content-Length: 41\r\n\r\nGET /s/{id} HTTP/1.1\r\nHost: reviews\r\n\r\n",
    b"POST /m/{id} HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    b"29\r\nGET /s/{id} HTTP/1.1\r\nHost: reviews\r\n\r\n\r\n0\r\n\r\n",
    b"GET /m/{id} HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    b"GET /s/{id} HTTP/1.1\r\nHost: reviews\r\n\r\n",
    b"GET /m/{id} HTTP/1.1\r\nHost: reviews\r\nHost: reviews\r\n\r\n"
    b"GET /s/{id} HTTP/1.1\r\nHost: reviews\r\n\r\n",
    b"POST /m/{id} HTTP/1.1\r\nHost: nope\r\nContent-Length: 5\r\n\r\nhello"
    b"GET /s/{id} HTTP/1.1\r\nHost: reviews\r\n\r\n",
    b"GET /m/{id} HTTP/1.1\r\nHost: reviews\r\n\r\nGET /m/{id}/2 HTTP/1.1\r\nHost: ratings\r\n\r\n",
    b"POST /m/{id} HTTP/1.1\r\nHost: reviews\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
    b"\r\n\r\n0\r\n\r\nGET /s/{id} HTTP/1.1\r\nHost: reviews\r\n\r\n",
    b"POST /m/{id} HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
    b"hello!",
    b"GET http://reviews:9080/m/{id}?q=1 HTTP/1.1\r\nHost: ignored\r\n\r\n",
    b"POST /m/{id} HTTP/1.1\r\nHost: reviews\r\nExpect: 100-continue\r\n"
    b"Content-Length: 2\r\n\r\nok",
    b"GET /m/{id} HTTP/1.0\r\nHost: reviews\r\nConnection: keep-alive\r\n\r\n",
    b"HEAD /m/{id} HTTP/1.1\r\nHost: reviews\r\n\r\n",
    b"GET /m/{id}\r\n\r\n",
    b"GET /m/{id} HTTP/1.1\r\nHost: reviews\r\nx-canary: 1\r\nConnection: x-a\r\nx-a: 1\r\n\r\n",
    b"POST /m/{id} HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\nX: " + b"a" * 300 + b"\r\n\r\n",
]
_FRAMING = [
    b"Content-Length: 0\r\n",
    b"Content-Length: 7\r\n",
    b"Content-Length:  005 \r\n",
    b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding : chunked\r\n",
    b"Connection: Upgrade\r\nUpgrade: h2c\r\n",
    b"Connection: close\r\n",
    b"Expect: 100-continue\r\n",
    b"Host: ratings\r\n",
    b"x-lanes-hops: 16\r\n",
    b"x-lane: " + b"a" * 80 + b"\r\n",
    b"X-Many: 1\r\n" * 120,
]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(8)
        if not buf:
            break
        i = rng.randrange(len(buf))
        if op == 0:
            buf[i] = rng.randrange(256)
        elif op == 1:
            buf[i:i] = bytes(rng.choice(b"\r\n :\t;,0aZ\x00\x7f") for _ in range(rng.randint(1, 4)))
        elif op == 2:
            del buf[i : i + rng.randint(1, 8)]
        elif op == 3:  # duplicate a line
            start = buf.rfind(b"\n", 0, i) + 1
            end = buf.find(b"\n", i)
            if end > 0:
                buf[start:start] = buf[start : end + 1]
        elif op == 4:  # LF for CRLF
            j = buf.find(b"\r\n", i)
            if j >= 0:
                del buf[j]
        elif op == 5:  # a framing header into the head
            j = buf.find(b"\r\n")
            if j > 0:
                buf[j + 2 : j + 2] = rng.choice(_FRAMING)
        elif op == 6:
            del buf[i:]  # truncated
        else:
            buf[i:i] = buf[i : i + rng.randint(1, 64)]  # repeat a span
    return bytes(buf)


def corpus(seed: int, n: int, start: int = 0) -> list[tuple[int, bytes]]:
    """``n`` (id, request bytes): seeds with marker ``{id}``, most of them mutated."""
    rng = random.Random(seed * 1_000_003 + start)
    out = []
    for k in range(start, start + n):
        raw = rng.choice(_SEEDS).replace(b"{id}", str(k).encode())
        out.append((k, raw if rng.random() < 0.15 else _mutate(rng, raw)))
    return out


@dataclass
class FuzzUpstream:
    """An aiohttp upstream that records a request's path only once it has answered it."""

    answered: Counter[str] = field(default_factory=Counter)
    port: int = 0
    _runner: Any = None

    async def start(self) -> FuzzUpstream:
        async def answer(request: web.Request) -> web.StreamResponse:
            await request.read()
            path = quote(request.raw_path, safe="/?=&%:")
            self.answered[path] += 1
            return web.Response(text="ok", headers={"x-path": path})

        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", answer)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Tally:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    received_paths: Counter[str] = field(default_factory=Counter)
    non_json_errors: list[str] = field(default_factory=list)
    internal: int = 0
    no_answer: int = 0

    def summary(self) -> dict[str, Any]:
        classes = Counter(f"{s // 100}xx" for s in self.statuses.elements())
        return {
            "sent": self.sent,
            "responses": sum(self.statuses.values()),
            "by_class": dict(sorted(classes.items())),
            "no_answer": self.no_answer,
            "non_json_errors": len(self.non_json_errors),
            "internal": self.internal,
        }


def _responses(raw: bytes, tally: Tally, own_errors: bool, head: bool) -> None:
    """Parse every response in ``raw`` (what one connection received) into the tally;
    ``head``: the first request was a HEAD (its answer has no body)."""
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\r\n\r\n", pos)
        if end < 0 or not raw.startswith(b"HTTP/1.", pos):
            return
        lines = raw[pos:end].decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        pos = end + 4
        body = b""
        head_only = head and status >= 200
        if head_only:
            head = False
        elif "content-length" in headers and status >= 200 and status not in (204, 304):
            n = int(headers["content-length"])
            body, pos = raw[pos : pos + n], pos + n
        elif status == 101:
            pos = len(raw)
        own_errors_here = own_errors and not head_only
        tally.statuses[status] += 1
        if "x-path" in headers:
            tally.received_paths[headers["x-path"]] += 1
        if own_errors_here and ("x-lanes-error" in headers or status == 502):
            try:
                doc = json.loads(body)
                assert headers.get("content-type") == "application/json"
                assert doc["status"] == status and isinstance(doc["reason"], str)
                tally.internal += doc["reason"] == "internal"
            except Exception:
                if body or status != 502 or "x-lanes-error" in headers:  # HEAD has no body
                    tally.non_json_errors.append(f"{status} {headers} {body[:80]!r}")


async def _one(
    addr: tuple[str, int], data: bytes, tally: Tally, own_errors: bool, half_close: bool
) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*addr), 5)
    except (TimeoutError, OSError):
        tally.no_answer += 1
        return
    got = b""
    try:
        writer.write(data)
        if half_close:  # then read until the proxy closes
            writer.write_eof()
            while chunk := await asyncio.wait_for(reader.read(65536), 15):
                got += chunk
        else:  # a proxy that closes on a half-close (Envoy): read until 0.5 s of silence
            while chunk := await asyncio.wait_for(reader.read(65536), 0.5 if got else 5):
                got += chunk
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()
    if not got:
        tally.no_answer += 1
    _responses(got, tally, own_errors, data.startswith(b"HEAD "))


async def run_corpus(
    addr: tuple[str, int],
    requests: list[tuple[int, bytes]],
    *,
    own_errors: bool,
    parallel: int = 32,
    half_close: bool = True,
) -> Tally:
    """Send each request on its own connection (then EOF if ``half_close``), ``parallel`` at
    a time."""
    tally = Tally()
    it = iter(requests)

    async def worker() -> None:
        for _, data in it:
            tally.sent += 1
            await _one(addr, data, tally, own_errors, half_close)

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return tally
