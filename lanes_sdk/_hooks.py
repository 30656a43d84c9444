"""Post-import hooks: run a callback once a module has been imported, now or later.

``instrument()`` must not import a framework the service does not use (importing aiohttp costs
start-up time and, under ``-W error``, OpenTelemetry's aiohttp instrumentation raises its
DeprecationWarning), yet must cover it when the service imports it after ``instrument()``. A
finder first on ``sys.meta_path`` wraps the loader of a watched module so the callbacks run
right after the module body, before the importer sees it: ``from fastapi import FastAPI`` then
binds the class the instrumentation installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

__all__ = ["cancel_hooks", "when_imported"]

_log = logging.getLogger("lanes.sdk")
_lock = threading.RLock()
_pending: dict[str, list[Callable[[ModuleType], None]]] = {}
_busy = threading.local()


def _call(callback: Callable[[ModuleType], None], module: ModuleType) -> None:
    try:
        callback(module)
    except Exception:  # an import of the service's must never fail because of lanes
        _log.warning(
            "lanes: setting up %s failed; lanes may stop at it", module.__name__, exc_info=True
        )


def _run(name: str, module: ModuleType) -> None:
    with _lock:
        callbacks = _pending.pop(name, [])
    for callback in callbacks:
        _call(callback, module)


class _Loader(importlib.abc.Loader):
    """Delegates to the real loader, then runs the hooks and puts the real loader back."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        create = getattr(self._real, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        if spec is not None:
            spec.loader = self._real
        module.__loader__ = self._real
        self._real.exec_module(module)
        _run(module.__name__, module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _pending or getattr(_busy, "active", False):
            return None
        _busy.active = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            _busy.active = False
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


_FINDER = _Finder()


def when_imported(name: str, callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(module)`` now if ``name`` is imported, else right after its import."""
    module = sys.modules.get(name)
    if module is not None:
        _call(callback, module)
        return
    with _lock:
        _pending.setdefault(name, []).append(callback)
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)


def cancel_hooks() -> None:
    """Forget every pending hook (``uninstrument()``)."""
    with _lock:
        _pending.clear()
        if _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
