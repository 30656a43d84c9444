"""The edge's pure steps: client lane members out of baggage, the token from header or cookie."""

from __future__ import annotations

import pytest

from lane_router._sidecar._edge import strip_baggage_lane, strip_cookie, take_cookie, token_from

# (baggage line, the line after the edge) - shared with the Envoy test so both planes agree.
STRIP_CASES = [
    (b"lane=feature-a", None),
    (b"a=1,lane=feature-a,b=2;p=x", b"a=1,b=2;p=x"),
    (b"lane=feature-a, userId=alice%20x ,k=v", b"userId=alice%20x ,k=v"),
    (b"k=v , lane = Bad Value;ttl=5", b"k=v"),
    (b"lanes=x,mylane=y,lane=z", b"lanes=x,mylane=y"),
    (b"k=lane,x=lane=y", b"k=lane,x=lane=y"),
    (b"lane=a,lane=b", None),
    (b"no-lane-here=1", b"no-lane-here=1"),
]

# (cookie line, the line after the edge): the token's pair goes, the others keep their bytes.
COOKIE_CASES = [
    (b"lane_token=abc", None),
    (b"theme=dark; lane_token=abc.def; sid=1", b"theme=dark; sid=1"),
    (b'lane_token="q";a=1', b"a=1"),
    (b"a=1;  lane_token = x ;b=lane_token", b"a=1;b=lane_token"),
    (b"my_lane_token=1; lane_tokens=2", b"my_lane_token=1; lane_tokens=2"),
    (b"lane_token=a; lane_token=b", None),
    (b"lane_token", None),
]


@pytest.mark.parametrize(("line", "after"), COOKIE_CASES)
def test_strip_cookie(line: bytes, after: bytes | None) -> None:
    assert strip_cookie(line, b"lane_token") == after


@pytest.mark.parametrize(
    ("line", "token"),
    [
        (b"a=1; lane_token = x ;b=2", b"x"),
        (b'lane_token="q"; lane_token=r', b"q"),
        (b"lane_token; lane_token=r", b""),
        (b"a=lane_token", None),
    ],
)
def test_take_cookie_reads_the_first_pair(line: bytes, token: bytes | None) -> None:
    assert take_cookie(line, b"lane_token")[1] == token


@pytest.mark.parametrize(("line", "after"), STRIP_CASES)
def test_strip_baggage_lane(line: bytes, after: bytes | None) -> None:
    assert strip_baggage_lane(line, b"lane") == after


def test_an_untouched_line_is_the_same_object() -> None:
    line = b"k=v,lanes=2"
    assert strip_baggage_lane(line, b"lane") is line


@pytest.mark.parametrize(
    ("headers", "cookies", "token"),
    [
        ([b" tok "], [b"lane_token=other"], b"tok"),
        ([b""], [b"a=1; lane_token=abc.def.ghi; b=2"], b"abc.def.ghi"),
        (None, [b"x=1", b'lane_token="q"'], b"q"),
        (None, [b"my_lane_token=1; lane_token="], None),
        (None, [b"xlane_token=1"], None),
        (None, None, None),
    ],
)
def test_token_from(
    headers: list[bytes] | None, cookies: list[bytes] | None, token: bytes | None
) -> None:
    assert token_from(headers, cookies, b"lane_token") == token
