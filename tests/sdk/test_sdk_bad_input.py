"""Bad input on the wire, sent byte for byte to a real instrumented service B (which forwards to
C): no lane or the right lane, never an exception or a 5xx, never a bad outbound header."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.usefixtures("instrumented")

Headers = list[tuple[bytes, bytes]]

TEN_KB = 10 * 1024
MEMBERS_200 = ",".join(f"k{i}=v{i}" for i in range(199)).encode() + b",lane=feature-z"
# Under 8192 bytes as sent, over it once re-encoded ("/" -> "%2F"): lane last would be dropped.
GROWING = b"p=" + b"/" * 4000 + b",lane=feature-g"
LONG_BAGGAGE = b"pad=" + b"x" * TEN_KB + b",lane=feature-l"  # past W3C's 8192-byte limit

CASES: list[tuple[str, Headers, str | None]] = [
    ("upper case", [(b"x-lane", b"FEATURE-A")], None),
    ("unicode utf-8", [(b"x-lane", "féature".encode())], None),
    ("unicode in baggage", [(b"baggage", "lane=féature".encode())], None),
    ("latin-1 byte", [(b"x-lane", b"feature-\xe9")], None),
    ("encoded CR/LF", [(b"baggage", b"lane=feature-a%0D%0Ax-evil:%201")], None),
    ("10 KB x-lane", [(b"x-lane", b"a" * TEN_KB)], None),
    ("10 KB baggage, lane past 8192 bytes", [(b"baggage", LONG_BAGGAGE)], "feature-l"),
    ("baggage that grows when re-encoded", [(b"baggage", GROWING)], "feature-g"),
    ("duplicate members", [(b"baggage", b"lane=feature-a,lane=feature-b")], "feature-a"),
    ("invalid then valid member", [(b"baggage", b"lane=Bad,lane=feature-b")], "feature-b"),
    ("200 members, lane last", [(b"baggage", MEMBERS_200)], "feature-z"),
    (
        "two baggage headers",
        [(b"baggage", b"user=1"), (b"baggage", b" lane = feature-c ;ttl=5")],
        "feature-c",
    ),
    ("empty x-lane", [(b"x-lane", b""), (b"baggage", b"lane=feature-d")], "feature-d"),
    ("invalid x-lane", [(b"x-lane", b"a b"), (b"baggage", b"lane=feature-e")], "feature-e"),
    ("x-lane wins", [(b"x-lane", b"feature-x"), (b"baggage", b"lane=feature-y")], "feature-x"),
    ("two x-lane headers", [(b"x-lane", b"NO"), (b"x-lane", b" feature-w ")], "feature-w"),
    ("64-char name", [(b"x-lane", b"a" * 64)], None),
]


async def _raw_get(url: str, headers: Headers) -> tuple[int, bytes]:
    """HTTP/1.1 GET written byte for byte: no client library cleans the headers up."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        head = [f"GET {parts.path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
        head += [name + b": " + value for name, value in headers]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.fixture
async def b_url(chain) -> str:
    urls = await chain(max_field_size=32 * 1024, max_line_size=32 * 1024)
    return urls["b"]


@pytest.mark.parametrize(("headers", "lane"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_header_is_no_lane_or_the_right_lane(b_url: str, headers: Headers, lane):
    status, body = await _raw_get(b_url, headers)
    assert status == 200, body
    seen = json.loads(body)
    c = seen["next"]
    assert (seen["lane"], c["lane"]) == (lane, lane)
    assert c["x_lane"] == ([lane] if lane else [])
    lane_members = [
        m.strip() for line in c["baggage"] for m in line.split(",") if m.strip().startswith("lane")
    ]
    assert lane_members == ([f"lane={lane}"] if lane else [])


@pytest.mark.parametrize("value", [b"feature-a\rx", b"feature-a\x00", b"feature-a\x7f"])
async def test_control_bytes_never_reach_the_handler_as_a_lane(b_url: str, value: bytes):
    """The HTTP parser may refuse these itself (400); if it lets one through, it is no lane."""
    status, body = await _raw_get(b_url, [(b"x-lane", value)])
    assert status in (200, 400), body
    if status == 200:
        seen = json.loads(body)
        assert (seen["lane"], seen["next"]["x_lane"]) == (None, [])
