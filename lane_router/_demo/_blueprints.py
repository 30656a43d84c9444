"""The meshes the demo and the end-to-end tests run."""

from __future__ import annotations

import random

from lane_router._demo._mesh import Blueprint
from lane_router._topology import Lane

__all__ = ["bookinfo", "shop"]


def bookinfo() -> Blueprint:
    """Istio's bookinfo shape: productpage -> (details, reviews -> ratings), three lanes.

    * ``feature-a`` deploys reviews and ratings;
    * ``feature-b`` falls back to feature-a and deploys only ratings, so its reviews come from
      feature-a and everything else from the baseline;
    * ``hotfix`` is strict and deploys productpage and details: its reviews call is refused.
    """
    return Blueprint(
        lanes=(
            Lane("feature-a", description="new reviews and ratings"),
            Lane("feature-b", fallback="feature-a", description="ratings on top of feature-a"),
            Lane("hotfix", strict=True, description="productpage fix, nothing else"),
        ),
        deploys={
            "productpage": ("hotfix",),
            "details": ("hotfix",),
            "reviews": ("feature-a",),
            "ratings": ("feature-a", "feature-b"),
        },
        calls={"productpage": (("details", "reviews"),), "reviews": (("ratings",),)},
        entry="productpage",
    )


SHOP_SERVICES = ("frontend", "catalog", "cart", "pricing", "inventory", "users")


def shop(*, lanes: int = 20, seed: int = 7) -> Blueprint:
    """Six services (a fan-out and a three-deep chain) and ``lanes`` generated lanes.

    Deterministic for a seed. Lanes fall back only to lanes declared before them (no cycles), so
    chains several lanes deep appear; every fifth lane is strict.
    """
    rng = random.Random(seed)
    names = [f"lane-{i:02d}" for i in range(lanes)]
    declared: list[Lane] = []
    deploys: dict[str, list[str]] = {s: [] for s in SHOP_SERVICES}
    for i, name in enumerate(names):
        strict = i % 5 == 4
        fallback = None
        if not strict and i and rng.random() < 0.6:
            fallback = rng.choice([x.name for x in declared if not x.strict])
        declared.append(Lane(name, fallback=fallback, strict=strict))
        for service in rng.sample(SHOP_SERVICES, rng.randint(1, 3)):
            deploys[service].append(name)
    return Blueprint(
        lanes=tuple(declared),
        deploys={s: tuple(v) for s, v in deploys.items()},
        calls={
            "frontend": (("catalog", "cart"),),
            "catalog": (("pricing",),),
            "pricing": (("inventory",),),
            "cart": (("users",),),
        },
        entry="frontend",
    )
