"""The project's own data plane: an HTTP/1.1 lane-routing proxy on uvloop + httptools.

``serve(config)`` runs it until SIGTERM (then drains); ``run(config)`` wraps that in a uvloop
event loop and returns the exit status. The routing decision is the routing core's
(:attr:`lane_router.Topology.routes`); the lane is read with ``lanes_sdk.wire``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

from lane_router._sidecar._config import SidecarConfig, format_hostport, parse_hostport
from lane_router._sidecar._edge import EdgeConfigError
from lane_router._sidecar._server import Sidecar, serve
from lane_router._topology import TopologyError

__all__ = ["Sidecar", "SidecarConfig", "format_hostport", "parse_hostport", "run", "serve"]


def _tune_malloc() -> None:
    """Keep glibc from trimming the heap top after every 256 KB body chunk.

    Without this each chunk's buffer is a fresh brk + page faults: streaming a 1 MB body cost
    ~1,200 us of CPU, with it ~360 us. The heap keeps at most ~1 MB more.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-2, 256 << 10)  # M_TOP_PAD
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixed: no dynamic growth)
    except (OSError, AttributeError):  # not glibc
        pass


def run(config: SidecarConfig) -> int:
    """Run the sidecar in a fresh uvloop loop; 2 if the topology is invalid, 1 if it cannot bind."""
    _tune_malloc()
    factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        factory = asyncio.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(serve(config))
    except (TopologyError, EdgeConfigError) as exc:
        print(f"lanes sidecar: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        logging.getLogger("lanes.sidecar").error("cannot listen: %s", exc)
        print(f"lanes sidecar: cannot listen: {exc}", file=sys.stderr)
        return 1
