"""HTTP/1.1 wire tables built once at import, and the sidecar's own (always JSON) responses."""

from __future__ import annotations

import json
from http import HTTPStatus

__all__ = [
    "B_PENDING",
    "B_PIPE",
    "B_UPSTREAM",
    "CONTINUE",
    "H_BAGGAGE",
    "H_CL",
    "H_CONNECTION",
    "H_EXPECT",
    "H_HOP",
    "H_HOPS",
    "H_HOST",
    "H_LANE",
    "H_TE",
    "H_UPGRADE",
    "H_XFF",
    "LAST_CHUNK",
    "REQUEST_HEADERS",
    "RESPONSE_HEADERS",
    "drop_connection_named",
    "error_response",
    "reason_phrase",
]

# Why a client connection's reading is paused (a bit mask; reading resumes at 0).
B_UPSTREAM = 1  # the upstream's write buffer is full
B_PENDING = 2  # body buffered while the upstream connection is being set up
B_PIPE = 4  # a pipelined request waits for the current one

# Header kinds: what the proxy does with a field line instead of copying it.
H_HOST = 1
H_LANE = 2  # the routing header (name comes from the topology)
H_BAGGAGE = 3  # copied, and scanned for the lane
H_CONNECTION = 4  # hop-by-hop; its tokens name more hop-by-hop fields
H_HOP = 5  # hop-by-hop: dropped
H_TE = 6  # Transfer-Encoding: dropped, the proxy frames the body itself
H_CL = 7
H_EXPECT = 8
H_XFF = 9
H_HOPS = 10  # the loop counter
H_UPGRADE = 11  # hop-by-hop; kept apart and re-emitted only for an upgrade the parser accepted

# RFC 9110 7.6.1 hop-by-hop fields, plus the proxy's own credentials (meant for this hop).
_HOP_BY_HOP = (b"keep-alive", b"proxy-connection", b"te", b"trailer")
REQUEST_HEADERS: dict[bytes, int] = {
    b"host": H_HOST,
    b"baggage": H_BAGGAGE,
    b"connection": H_CONNECTION,
    b"transfer-encoding": H_TE,
    b"content-length": H_CL,
    b"expect": H_EXPECT,
    b"x-forwarded-for": H_XFF,
    b"proxy-authorization": H_HOP,
    b"upgrade": H_UPGRADE,
    **dict.fromkeys(_HOP_BY_HOP, H_HOP),
}
RESPONSE_HEADERS: dict[bytes, int] = {
    b"connection": H_CONNECTION,
    b"transfer-encoding": H_TE,
    b"content-length": H_CL,
    b"proxy-authenticate": H_HOP,
    b"upgrade": H_UPGRADE,
    **dict.fromkeys(_HOP_BY_HOP, H_HOP),
}

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}
_REASONS[499] = b"Client Closed Request"


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


def error_response(
    status: int,
    reason: str,
    *,
    service: str | None,
    lane: str | None,
    close: bool,
    head_only: bool = False,
    detail: str | None = None,
) -> bytes:
    """A complete response the proxy makes itself: JSON naming service, lane and reason."""
    doc: dict[str, object] = {"status": status, "reason": reason, "service": service, "lane": lane}
    if detail:
        doc["detail"] = detail
    body = json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        status,
        reason_phrase(status),
        len(body),
    )
    head += b"x-lanes-error: %s\r\n" % reason.replace(" ", "-").encode("ascii")
    head += b"connection: close\r\n\r\n" if close else b"\r\n"
    return head if head_only else head + body


_ALREADY_DROPPED = frozenset((b"close", b"keep-alive", b"upgrade", b""))


def drop_connection_named(headers: list[bytes], tokens: list[bytes]) -> list[bytes]:
    """Remove the fields a Connection header names (RFC 9110 7.6.1).

    ``headers`` is flat: name, b": ", value, b"\r\n" per field line.
    """
    names = {t.strip().lower() for v in tokens for t in v.split(b",")} - _ALREADY_DROPPED
    if not names:
        return headers
    out: list[bytes] = []
    for i in range(0, len(headers), 4):
        if headers[i].lower() not in names:
            out += headers[i : i + 4]
    return out
