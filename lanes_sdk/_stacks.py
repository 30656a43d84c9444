"""The stacks a lane crosses: which OpenTelemetry instrumentation carries it through each
framework and client, turned on (``instrument()``) or checked (zero-code) when the service
imports that library, and a WARNING naming the fix when nothing covers it.

Why ``instrument()`` turns instrumentations on rather than only warning: calling it says "carry
lanes in this process", and a hop whose client or server is not instrumented drops the lane
(and the trace) with no error anywhere. OpenTelemetry instrumentors are process-wide singletons
and idempotent, so a service that also instruments by hand loses nothing. Under
``opentelemetry-instrument`` the distro has already done this for every installed
instrumentation; what is missing there was excluded on purpose (``OTEL_PYTHON_DISABLED_
INSTRUMENTATIONS``) or not installed, so lanes only warns.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

from lanes_sdk._hooks import when_imported

__all__ = ["STACKS", "Stack", "cover", "disabled", "quiet_instrument"]

_log = logging.getLogger("lanes.sdk")


@dataclass(frozen=True)
class Stack:
    """One library a lane crosses and the OpenTelemetry instrumentation that carries it."""

    module: str  # imported by the service: the trigger
    role: str  # what it is, for the warning
    entry_points: tuple[str, ...]  # names in group opentelemetry_instrumentor
    package: str  # what to install
    extra: str  # traffic-lanes extra that installs it
    patched: tuple[str, str] | None = None  # class the instrumentation replaces (module, name)
    covered_by: str | None = None  # an entry point whose instrumentation covers this one's use


_V = "==0.66b1"


def _stack(
    module: str,
    role: str,
    names: tuple[str, ...],
    dist: str,
    extra: str,
    patched: tuple[str, str] | None = None,
    covered_by: str | None = None,
) -> Stack:
    return Stack(
        module, role, names, f"opentelemetry-instrumentation-{dist}{_V}", extra, patched, covered_by
    )


STACKS: tuple[Stack, ...] = (
    _stack("aiohttp", "aiohttp client", ("aiohttp-client",), "aiohttp-client", ""),
    _stack(
        "aiohttp.web",
        "aiohttp server",
        ("aiohttp-server",),
        "aiohttp-server",
        "",
        ("aiohttp.web", "Application"),
    ),
    _stack("fastapi", "FastAPI server", ("fastapi",), "fastapi", "fastapi", ("fastapi", "FastAPI")),
    _stack("httpx", "httpx client", ("httpx",), "httpx", "fastapi"),
    _stack("flask", "Flask server", ("flask",), "flask", "flask", ("flask", "Flask")),
    _stack("requests", "requests client", ("requests",), "requests", "flask"),
    # requests imports urllib3: with the requests instrumentation, plain urllib3 is not a gap.
    _stack("urllib3", "urllib3 client", ("urllib3",), "urllib3", "flask", covered_by="requests"),
    _stack(
        "grpc",
        "gRPC client and server",
        ("grpc_client", "grpc_server", "grpc_aio_client", "grpc_aio_server"),
        "grpc",
        "grpc",
    ),
)


@cache
def _installed() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group="opentelemetry_instrumentor")}


def disabled() -> set[str]:
    """Instrumentations the operator switched off (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``)."""
    raw = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def quiet_instrument(instrumentor: Any, **kwargs: Any) -> bool:
    """``instrumentor.instrument(**kwargs)`` unless already done; True if this call did it.

    OpenTelemetry's instrumentations subclass framework classes that warn about it
    (``DeprecationWarning`` from aiohttp): under ``-W error`` that would stop the service.
    """
    if instrumentor.is_instrumented_by_opentelemetry:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        instrumentor.instrument(**kwargs)
    return bool(instrumentor.is_instrumented_by_opentelemetry)


def _fix(stack: Stack) -> str:
    extra = f"traffic-lanes[{stack.extra}] or " if stack.extra else ""
    return f"pip install {extra}{stack.package}"


def _stale(stack: Stack, original: object) -> None:
    """Warn about modules that bound the framework class before it was instrumented: apps they
    create are plain ones (no server span, no lane). Rebinding their names is not done: it
    would be invisible monkey-patching of the service's own modules."""
    assert stack.patched is not None
    mod_name, attr = stack.patched
    root = mod_name.split(".")[0]
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in (root, "opentelemetry", "lanes_sdk") or module is None:
            continue
        try:
            bound = [k for k, v in vars(module).items() if v is original]
        except TypeError:
            continue
        if bound:
            _log.warning(
                "lanes: module %s bound %s.%s before lanes_sdk.instrument(), so apps it creates "
                "get no server instrumentation (no lane, a new trace). Fix: call "
                "lanes_sdk.instrument() before importing %s there (or instrument each app by "
                "hand, as OpenTelemetry's instrument_app does)",
                name,
                mod_name,
                attr,
                name,
            )


def _activate(stack: Stack, install: bool, kwargs: dict[str, Any], done: list[Any]) -> None:
    off = disabled()
    missing: list[str] = []
    for ep_name in stack.entry_points:
        ep = _installed().get(ep_name)
        if ep is None:
            missing.append(ep_name)
            continue
        instrumentor = ep.load()()
        if instrumentor.is_instrumented_by_opentelemetry:
            continue
        if ep_name in off:
            _log.warning(
                "lanes: %s is imported but its OpenTelemetry instrumentation %r is disabled "
                "(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS): the lane and the trace stop there",
                stack.role,
                ep_name,
            )
            continue
        if not install:
            _log.warning(
                "lanes: %s is imported but OpenTelemetry's %r instrumentation is not active "
                "(it failed or was skipped, see OpenTelemetry's log): the lane stops there",
                stack.role,
                ep_name,
            )
            continue
        original = None
        if stack.patched is not None:
            original = getattr(sys.modules.get(stack.patched[0]), stack.patched[1], None)
        if quiet_instrument(instrumentor, **kwargs):
            done.append(instrumentor)
        if original is not None:
            _stale(stack, original)
    if missing and not (stack.covered_by and stack.covered_by in _installed()):
        _log.warning(
            "lanes: %s is imported but no OpenTelemetry instrumentation covers it, so the lane "
            "(x-lane, baggage) and the trace stop there. Fix: %s",
            stack.role,
            _fix(stack),
        )


def cover(*, install: bool, kwargs: dict[str, Any], done: list[Any]) -> None:
    """For every stack, now or when the service imports it: turn its instrumentation on
    (``install``) or check it is on, and warn when nothing can carry the lane through it."""
    for stack in STACKS:

        def hook(module: ModuleType, stack: Stack = stack) -> None:
            _activate(stack, install, kwargs, done)

        when_imported(stack.module, hook)
