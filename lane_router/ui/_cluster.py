"""``lanes ui --kube``: the controller's view of a namespace as the UI's topology.

The model comes from the controller's own code (``read_model``: the same objects, the same rules,
TTL expiry as the controller computes it), so the pages never disagree with what is routed.
Reads are synchronous (the Kubernetes client): the app runs them in a thread, at most once per
``min_age`` seconds however many pages refresh.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from lane_router import Topology, TopologyError

if TYPE_CHECKING:
    from lane_router._controller import NamespaceModel

__all__ = ["ModelView", "View"]

log = logging.getLogger("lanes.ui")


@dataclass(frozen=True)
class View:
    """A topology and, per lane with a TTL, when it expires (the map shows it)."""

    topology: Topology
    expires: Mapping[str, datetime] = field(default_factory=dict)


class ModelView:
    """Callable giving the current :class:`View` of one namespace from ``read`` (a function
    returning the controller's ``NamespaceModel``); a failed read keeps the last view with a
    WARNING, and with no view yet raises :class:`TopologyError` (the pages' JSON 503)."""

    def __init__(
        self,
        read: Callable[[], NamespaceModel],
        *,
        where: str,
        min_age: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read, self.where, self._min_age, self._clock = read, where, min_age, clock
        self._lock = threading.Lock()
        self._last: tuple[float, View] | None = None

    def __call__(self) -> View:
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < self._min_age:
                return self._last[1]
            try:
                view = self._view(self._read())
            except TopologyError as exc:
                if self._last is None:
                    raise
                log.warning("lanes ui: %s: %s; the previous view stays shown", self.where, exc)
                return self._last[1]
            except Exception as exc:  # the API server: down, forbidden, timed out
                problem = (
                    f"cannot read {self.where}: {exc} (check --kubeconfig/--context and that "
                    "this identity may list trafficlanes, trafficcanaries, deployments, services)"
                )
                if self._last is None:
                    raise TopologyError([problem]) from exc
                log.warning("lanes ui: %s; the previous view stays shown", problem)
                return self._last[1]
            self._last = (now, view)
            return view

    def _view(self, model: NamespaceModel) -> View:
        if model.topology is None:
            raise TopologyError(
                [
                    f"{self.where}: no routable service yet (a Service S and a Deployment "
                    "whose pods are labelled app=S, lane=<baseline> with an available replica)",
                    *model.skipped,
                ]
            )
        expires = {
            name: info.expires_at
            for name, info in model.lanes.items()
            if info.live and info.expires_at is not None
        }
        return View(model.topology, expires)
