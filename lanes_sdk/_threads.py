"""Carry the lane into threads: ``run_in_executor`` and ``threading.Thread`` start with an
empty context, so without these a lane set in a handler is gone inside the worker."""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from typing import Any, ParamSpec, TypeVar

__all__ = ["LaneExecutor", "wrap"]

P = ParamSpec("P")
R = TypeVar("R")


class LaneExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in a copy of the submitter's context.

    Use it with ``loop.run_in_executor(executor, fn)``, or make it the loop's default with
    ``loop.set_default_executor(LaneExecutor())`` so ``run_in_executor(None, fn)`` keeps the
    lane too. Each task gets its own copy, so concurrent tasks never share one.
    """

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        return super().submit(copy_context().run, fn, *args, **kwargs)


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to the context (lane, baggage, span) current *now*, for ``Thread(target=)``.

    Every call runs in a fresh copy of that context, so the wrapper can be called from several
    threads at once.
    """
    captured = copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return captured.copy().run(fn, *args, **kwargs)

    return run
