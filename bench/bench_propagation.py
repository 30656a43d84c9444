"""Cost of the lane per hop: extract + inject with tracecontext,baggage,lane versus
tracecontext,baggage alone. Goal: <= 1 us added per hop.

Usage: ``.venv/bin/python bench/bench_propagation.py [--number N] [--repeat N]``

A hop extracts the inbound headers into a context and injects that context into the outbound
headers, as the aiohttp server and client instrumentations do. Inbound headers are what one of
our services sends: ``traceparent``, ``baggage`` and ``x-lane``. Scenarios: the mesh case
(x-lane and a one-member baggage), baggage with several members, baggage only (first hop from a
W3C-only caller), and untagged. Base and lane runs of ``--number`` hops alternate in
``--repeat`` pairs (the order flips every pair), timed in process CPU time so other processes do
not count directly. The columns are medians over the pairs, and "added" is the median of the
paired differences (lane run minus its neighbouring base run): on a loaded machine both runs of
a pair see the same disturbance, which a difference of two minima does not cancel. "lane alone"
times the lane propagator by itself on the context tracecontext+baggage extracted (best run).
Also timed, for reference: the lane middleware's baggage-only extract, which a server pays once
per request under the OTel aiohttp server instrumentation (that one extracts but never attaches).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from collections.abc import Callable

from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import default_getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from lanes_sdk import LanePropagator

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SCENARIOS: dict[str, dict[str, str]] = {
    "x-lane + baggage(lane)": {
        "traceparent": TRACEPARENT,
        "baggage": "lane=feature-a",
        "x-lane": "feature-a",
    },
    "x-lane + baggage(4 members)": {
        "traceparent": TRACEPARENT,
        "baggage": "lane=feature-a,user=42,tenant=acme,canary=0",
        "x-lane": "feature-a",
    },
    "baggage(lane;ttl) only": {
        "traceparent": TRACEPARENT,
        "baggage": "user=42,lane=feature-a;ttl=60",
    },
    "untagged": {"traceparent": TRACEPARENT},
}


def _hop(propagator: CompositePropagator, carrier: dict[str, str]) -> Callable[[], None]:
    extract = propagator.extract
    inject = propagator.inject
    empty = Context()

    def hop() -> None:
        inject({}, extract(carrier, empty))

    return hop


def _best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    # CPU time of this process: on a shared machine, wall time also counts other processes.
    timer = timeit.Timer(fn, timer=time.process_time)
    return min(timer.repeat(number=number, repeat=repeat)) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=4_000, help="hops per run")
    parser.add_argument("--repeat", type=int, default=60, help="interleaved base/lane pairs")
    args = parser.parse_args(argv)
    number, repeat = args.number, args.repeat

    base = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    lane = LanePropagator()
    ours = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), lane])
    print(f"python {sys.version.split()[0]}, {repeat} interleaved pairs of {number}-hop runs")
    print(
        f"{'us per hop (extract+inject)':<30} {'tc+baggage':>10} {'+lane':>8} {'added':>7}"
        f" {'lane alone':>10}"
    )
    worst = 0.0
    for name, carrier in SCENARIOS.items():
        base_hop, our_hop = _hop(base, carrier), _hop(ours, carrier)
        bs: list[float] = []
        os_: list[float] = []
        for i in range(repeat):  # interleaved, order flipped each pair: drift hits both alike
            if i % 2:
                os_.append(_best_us(our_hop, number, 1))
                bs.append(_best_us(base_hop, number, 1))
            else:
                bs.append(_best_us(base_hop, number, 1))
                os_.append(_best_us(our_hop, number, 1))
        b, o = statistics.median(bs), statistics.median(os_)
        added = statistics.median(y - x for x, y in zip(bs, os_, strict=True))
        # The lane propagator by itself, on the context tracecontext+baggage extracted: what
        # the composite adds, minus its loop step.
        before = base.extract(carrier, Context())
        alone = _best_us(
            lambda c=carrier, x=before: lane.inject({}, lane.extract(c, x)), number, repeat // 4
        )
        worst = max(worst, added)
        print(f"{name:<30} {b:>10.2f} {o:>8.2f} {added:>+7.2f} {alone:>10.2f}")
    print(f"worst added per hop: {worst:.2f} us (goal <= 1.00)")

    carrier = SCENARIOS["x-lane + baggage(lane)"]
    # What the lane middleware does per request, from public parts: W3C baggage, then the lane
    # (no trace context: the server span stays the parent).
    w3c = W3CBaggagePropagator()
    mw = _best_us(
        lambda: lane.extract(
            carrier, w3c.extract(carrier, Context(), default_getter), default_getter
        ),
        number,
        repeat,
    )
    print(f"lane middleware baggage-only extract, once per request (not per hop): {mw:.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
