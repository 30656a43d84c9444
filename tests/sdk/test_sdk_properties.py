"""Property tests: no header value or combination makes extract raise or yield an invalid lane,
nothing invalid is ever written out, and inject/extract round-trip every valid lane."""

from __future__ import annotations

import contextlib
import re
from urllib.parse import unquote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from lanes_sdk import (
    LanePropagator,
    current_lane,
    extract_lane,
    inject_lane,
    lane_from_baggage,
    lane_from_headers,
    use_lane,
    valid_lane,
)

LANE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
LANE = LanePropagator(header="x-lane", baggage_key="lane")
FULL = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), LANE])
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

lanes = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
# Values shaped like the wire: lane-ish text with the separators that matter, plus anything.
wire_text = st.one_of(
    st.text(alphabet="abcAB-09 ,;=%\t\r\n+é\x00lane", max_size=80),
    st.text(max_size=80),
    lanes,
    st.builds(lambda n: "a" * n, st.integers(60, 10_000)),
)
wire_value = st.one_of(wire_text, st.binary(max_size=80))
carriers = st.fixed_dictionaries(
    {},
    optional={
        "x-lane": st.lists(wire_value, max_size=3),
        "baggage": st.lists(
            st.one_of(
                wire_value,
                st.lists(st.tuples(wire_text, wire_text), max_size=8).map(
                    lambda kv: ",".join(f"{k}={v}" for k, v in kv)
                ),
            ),
            max_size=3,
        ),
    },
)


def _no_bad_output(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        assert isinstance(value, str)
        assert "\r" not in value and "\n" not in value, (name, value)
    if "x-lane" in headers:
        assert LANE_RE.fullmatch(headers["x-lane"])


@SETTINGS
@given(carriers)
def test_extract_never_raises_nor_yields_an_invalid_lane(carrier):
    # OTel's W3C baggage parser raises on bytes values (str.encode on bytes); HTTP getters give
    # str, so the full chain gets the latin-1 text a server would see. Ours takes both.
    as_text = {
        k: [v.decode("latin-1") if isinstance(v, bytes) else v for v in vs]
        for k, vs in carrier.items()
    }
    for propagator, headers in ((LANE, carrier), (FULL, as_text)):
        ctx = propagator.extract(headers, Context())
        held = baggage.get_baggage("lane", ctx)
        assert held is None or LANE_RE.fullmatch(held)
        out: dict[str, str] = {}
        propagator.inject(out, ctx)
        _no_bad_output(out)
        assert out.get("x-lane") == held


@SETTINGS
@given(carriers, lanes)
def test_a_valid_routing_header_decides(carrier, lane):
    carrier = {**carrier, "x-lane": ["Not A Lane", lane]}
    assert current_lane(LANE.extract(carrier, Context())) == lane


@SETTINGS
@given(
    lanes,
    st.lists(st.from_regex(r"[a-km-z][a-z0-9_]{0,8}=[a-z0-9]{1,8}", fullmatch=True), max_size=6),
    st.integers(0, 6),
    st.sampled_from(["", ";ttl=60", ";x", " ;p=1;q"]),
    st.sampled_from(["", " ", "\t"]),
)
def test_baggage_member_found_anywhere(lane, others, at, props, ows):
    members = list(others)
    members.insert(min(at, len(members)), f"{ows}lane{ows}={ows}{lane}{props}")
    carrier = {"baggage": [",".join(members)]}
    for propagator in (LANE, FULL):
        ctx = propagator.extract(carrier, Context())
        assert baggage.get_baggage("lane", ctx) == lane  # the bare name, never the properties


@SETTINGS
@given(lanes)
def test_round_trip(lane):
    with use_lane(lane):
        out: dict[str, str] = {}
        FULL.inject(out)
    assert out["x-lane"] == lane
    assert f"lane={lane}" in out["baggage"].split(",")
    for carrier in (out, {"x-lane": out["x-lane"]}, {"baggage": out["baggage"]}):
        assert current_lane(FULL.extract(carrier, Context())) == lane


pairs = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from(["x-lane", "X-Lane", b"x-lane", "baggage", b"baggage"]), st.text()
        ),
        st.one_of(wire_value, st.none(), st.integers()),
    ),
    max_size=6,
)


@SETTINGS
@given(st.one_of(pairs, pairs.map(dict), st.none(), st.text(), st.integers()))
def test_message_extract_never_raises(headers):
    lane = extract_lane(headers)
    assert lane is None or LANE_RE.fullmatch(lane)


@SETTINGS
@given(lanes, pairs)
def test_message_round_trip(lane, noise):
    noise = [
        (k, v)
        for k, v in noise
        if not (
            isinstance(k, str | bytes) and k.lower() in ("x-lane", b"x-lane", "baggage", b"baggage")
        )
    ]
    as_list = inject_lane(list(noise), lane)
    assert extract_lane(as_list) == lane
    assert sum(1 for k, _ in as_list if k == "x-lane") == 1
    as_dict = inject_lane({"X-LANE": "stale", "other": "1"}, lane)
    assert as_dict == {"x-lane": lane, "other": "1"}
    assert extract_lane(as_dict) == lane


def _oracle(lines: list[str], key: str = "lane") -> str | None:
    """design.md's baggage rule written the obvious way: members split on ',', the first whose
    name (OWS trimmed) is the key and whose value (properties and OWS dropped, percent-decoded)
    is a valid lane."""
    for line in lines:
        for member in line.split(","):
            name, sep, value = member.partition("=")
            if not sep or name.strip(" \t") != key:
                continue
            value = value.split(";", 1)[0]
            lane = valid_lane(unquote(value) if "%" in value else value)
            if lane is not None:
                return lane
    return None


member_text = st.text(alphabet="lane=,; \t%2Dab-9Z\u00e9x", max_size=60)


@SETTINGS
@given(st.lists(st.one_of(member_text, wire_text), max_size=3))
def test_baggage_scan_matches_the_obvious_rule(lines):
    assert lane_from_baggage(lines, "lane") == _oracle(lines)


@SETTINGS
@given(carriers)
def test_propagator_extract_is_the_wire_rule(carrier):
    """One semantics: the propagator finds exactly what ``lanes_sdk.wire.lane_from_headers`` finds
    (the function the sidecar routes with), once a routing-header line joined from repeated lines
    (``a,b``: WSGI/CGI) is read as those lines, up to 16 of them."""
    lines: list[object] = []
    for value in carrier.get("x-lane", []):
        lines.append(value)
        if isinstance(value, str) and valid_lane(value) is None:
            lines.extend(value.split(",")[:16])
    want = lane_from_headers(lines, carrier.get("baggage", []))
    assert current_lane(LANE.extract(carrier, Context())) == want


@SETTINGS
@given(
    st.lists(st.one_of(member_text, wire_text), min_size=1, max_size=3).map(",".join),
    st.one_of(st.none(), lanes),
)
def test_one_baggage_line_is_the_wire_rule_with_any_held_lane(line, held):
    """The string fast paths (a lane already parsed by the W3C propagator, or by an earlier
    propagator or hop, as a hint; the per-line memo) never change the answer: the first valid
    ``lane`` member of the line, else the lane already held."""
    before = Context() if held is None else baggage.set_baggage("lane", held, Context())
    with contextlib.suppress(Exception):  # OTel's parser may refuse a hostile line
        before = W3CBaggagePropagator().extract({"baggage": line}, before)
    want = lane_from_baggage([line], "lane")
    held_lane = current_lane(before)
    for _ in range(2):  # the second call answers from the memo
        got = current_lane(LANE.extract({"baggage": line}, before))
        assert got == (want if want is not None else held_lane)


def test_the_baggage_line_memo_is_bounded():
    prop = LanePropagator()
    for i in range(2_000):
        prop.extract({"baggage": f"lane=l{i},user={i}"}, Context())
        prop.extract({"baggage": f"lane=l{i}," + "x" * 300}, Context())  # too long to keep
    assert len(prop._lines) <= 256
    assert all(len(line) <= 256 for line in prop._lines)
