"""Traffic for the harness: every kind of lane a QA client can send, and a load pump."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from multidict import CIMultiDict

from lane_router._topology import Topology

__all__ = ["lane_cases", "pump"]


async def pump(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    """Run ``one(0) .. one(n-1)``, ``concurrency`` at a time, in order of issue."""
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def lane_cases(topology: Topology) -> list[tuple[str, Mapping[str, str]]]:
    """Every kind of lane a QA client can send, for the lanes of ``topology``.

    Each declared lane by ``x-lane``; the baseline (untagged and by name); an undeclared lane;
    invalid values; baggage only (plain, with properties and other members); an invalid
    ``x-lane`` where the baggage decides; a valid ``x-lane`` that beats the baggage.
    """
    lanes = list(topology.lanes)
    deep = max(lanes, key=lambda x: len(topology.chains[x]))
    other = next(x for x in lanes if x != deep)
    cases: list[tuple[str, Mapping[str, str]]] = [("untagged", {})]
    cases += [(f"x-lane {x}", {"x-lane": x}) for x in lanes]
    cases += [
        ("baseline by name", {"x-lane": topology.baseline}),
        ("undeclared lane", {"x-lane": "no-such-lane"}),
        ("invalid: upper case", {"x-lane": deep.upper()}),
        ("invalid: underscore", {"x-lane": deep.replace("-", "_")}),
        ("invalid: 64 chars", {"x-lane": "a" * 64}),
        ("invalid: empty", {"x-lane": ""}),
        ("baggage only", {"baggage": f"lane={deep}"}),
        ("baggage with members", {"baggage": f"user=7, lane = {deep};ttl=60 ,z=1"}),
        ("invalid x-lane, baggage decides", {"x-lane": "Not Valid", "baggage": f"lane={deep}"}),
        ("x-lane beats baggage", {"x-lane": other, "baggage": f"lane={deep}"}),
        ("undeclared in baggage", {"baggage": "lane=no-such-lane"}),
        (
            "lane in a second baggage header",
            CIMultiDict([("baggage", "user=7"), ("baggage", f"lane={deep}")]),
        ),
    ]
    return cases
