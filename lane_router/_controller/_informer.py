"""List, then watch from the list's resourceVersion; keep a cache; report every change.

The loop a controller needs to lose nothing: a watch that ends (server timeout, dropped
connection, API server restart) resumes from the last resourceVersion it saw (BOOKMARK events
move it along while nothing changes); ``410 Gone`` (our version was compacted away) relists and
reports the difference between the old cache and the new list as changes; any other error waits
with capped exponential backoff and full jitter before trying again.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from lane_router._controller._kube import ApiError, Kube, Resource, Watch

__all__ = ["Backoff", "Informer", "Key"]

log = logging.getLogger("lanes.controller")

Key = tuple[str, str]  # (namespace, name)
OnChange = Callable[[Resource, "dict[str, Any] | None", "dict[str, Any] | None"], None]


class Backoff:
    """Capped exponential backoff with full jitter; ``reset()`` after a success."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap, self.base * 2 ** min(self.failures, 20)))

    def reset(self) -> None:
        self.failures = 0


def _key(obj: dict[str, Any]) -> Key:
    md = obj.get("metadata", {})
    return md.get("namespace", ""), md.get("name", "")


class Informer:
    def __init__(
        self,
        kube: Kube,
        res: Resource,
        *,
        namespace: str | None,
        on_change: OnChange,
        stop: threading.Event,
        metrics: Any,
        watch_timeout: int = 300,
        backoff_cap: float = 5.0,
    ) -> None:
        self.kube, self.res, self.namespace = kube, res, namespace
        self._on_change, self._stop, self._metrics = on_change, stop, metrics
        self._watch_timeout = watch_timeout
        self._backoff = Backoff(cap=backoff_cap)
        self.lock = threading.Lock()
        self.cache: dict[Key, dict[str, Any]] = {}
        self.synced = threading.Event()
        self.resource_version = ""
        self._watch: Watch | None = None
        self.thread = threading.Thread(target=self._run, name=f"informer-{res.plural}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        """Unblock a running watch (the stop event must already be set)."""
        w = self._watch
        if w is not None:
            w.close()

    def get(self, key: Key) -> dict[str, Any] | None:
        with self.lock:
            return self.cache.get(key)

    def items(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.cache.values())

    def observe(self, obj: dict[str, Any]) -> None:
        """Record our own write's result now, so the next plan does not wait for the watch."""
        self._upsert(obj, notify=False)

    def forget(self, key: Key) -> None:
        with self.lock:
            self.cache.pop(key, None)

    # -- the loop -------------------------------------------------------------------------

    def _wait(self, reason: str) -> None:
        self._metrics.inc(
            "lanes_controller_watch_restarts_total", resource=self.res.plural, reason=reason
        )
        self._stop.wait(self._backoff.next())

    def _run(self) -> None:
        relist = True
        while not self._stop.is_set():
            try:
                if relist:
                    self._relist()
                    relist = False
                self._watch_once()
                self._backoff.reset()
            except ApiError as exc:
                if self._stop.is_set():
                    return
                if exc.status == 410:
                    log.info("%s: resourceVersion expired, relisting", self.res.plural)
                    self._metrics.inc(
                        "lanes_controller_watch_restarts_total",
                        resource=self.res.plural,
                        reason="gone",
                    )
                    relist = True
                    continue
                if exc.status == 404 and self.res.optional and relist:
                    if not self.synced.is_set():
                        log.warning("%s: not served (CRD not installed?)", self.res.plural)
                        self.synced.set()  # an empty list; the other kinds keep routing
                    self._wait("absent")
                    continue
                log.warning("%s: %s; retrying", self.res.plural, exc)
                self._wait("error")
            except Exception as exc:  # a bug or a malformed response: never kill the thread
                if self._stop.is_set():
                    return
                log.exception("%s: unexpected error: %s", self.res.plural, exc)
                relist = True
                self._wait("error")

    def _relist(self) -> None:
        items, rv = self.kube.list(self.res, self.namespace)
        fresh = {_key(o): o for o in items}
        with self.lock:
            old = self.cache
            self.cache = fresh
            self.resource_version = rv
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None or _rv(prev) != _rv(obj):
                self._on_change(self.res, prev, obj)
        for key, prev in old.items():
            if key not in fresh:
                self._on_change(self.res, prev, None)
        self.synced.set()

    def _watch_once(self) -> None:
        w = self.kube.watch(self.res, self.namespace, self.resource_version, self._watch_timeout)
        self._watch = w
        try:
            if self._stop.is_set():
                return
            for event in w:
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code") or 500)
                    raise ApiError(code, str(obj.get("reason", "")), str(obj.get("message", "")))
                rv = _rv(obj)
                if kind == "BOOKMARK":
                    self.resource_version = rv or self.resource_version
                    continue
                obj.setdefault("kind", self.res.kind)
                obj.setdefault("apiVersion", self.res.api_version)
                if kind == "DELETED":
                    with self.lock:
                        prev = self.cache.pop(_key(obj), None)
                        self.resource_version = rv or self.resource_version
                    self._on_change(self.res, prev, None)
                elif kind in ("ADDED", "MODIFIED"):
                    self._upsert(obj, notify=True)
                    with self.lock:
                        self.resource_version = rv or self.resource_version
        finally:
            self._watch = None
            w.close()

    def _upsert(self, obj: dict[str, Any], *, notify: bool) -> None:
        key = _key(obj)
        with self.lock:
            prev = self.cache.get(key)
            if prev is not None and _newer(prev, obj):
                return  # a stale echo of something we already know
            self.cache[key] = obj
        if notify:
            self._on_change(self.res, prev, obj)


def _rv(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))


def _newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when ``a`` is strictly newer than ``b`` (resourceVersions compared as integers only
    for ordering our own write results against watch echoes; otherwise they are opaque)."""
    ra, rb = _rv(a), _rv(b)
    return ra.isdigit() and rb.isdigit() and int(ra) > int(rb)
