"""Leader election on a coordination.k8s.io/v1 Lease (the client-go protocol).

The holder renews ``spec.renewTime`` every ``renew`` seconds; a candidate takes the Lease once
``renewTime + leaseDurationSeconds`` has passed. Every write is a replace carrying the Lease's
resourceVersion, so two candidates racing for it cannot both win (the loser gets 409). A leader
that cannot renew before its lease runs out steps down first: it stops writing before anyone
else may start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from lane_router._controller._kube import ApiError, Kube
from lane_router._controller._model import parse_time

__all__ = ["LeaderElector"]

log = logging.getLogger("lanes.controller")


def _micro(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        stop: threading.Event,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        on_change: Callable[[bool], None] = lambda leading: None,
    ) -> None:
        self.kube, self.namespace, self.name, self.identity = kube, namespace, name, identity
        self.lease_seconds, self.renew_seconds = lease_seconds, renew_seconds
        self._stop, self._on_change = stop, on_change
        self.leading = threading.Event()
        self._deadline = 0.0  # monotonic: stop acting as leader after this
        self.thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def is_leader(self) -> bool:
        if self.leading.is_set() and time.monotonic() >= self._deadline:
            self._set(False)
        return self.leading.is_set()

    def _set(self, leading: bool) -> None:
        if leading == self.leading.is_set():
            return
        (self.leading.set if leading else self.leading.clear)()
        log.info(
            "%s %s leadership of lease %s/%s",
            self.identity,
            "acquired" if leading else "lost",
            self.namespace,
            self.name,
        )
        self._on_change(leading)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                held = self._try()
            except ApiError as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                held = None  # unknown: keep leading until the deadline passes
            except Exception:
                log.exception("lease %s/%s: unexpected error", self.namespace, self.name)
                held = None
            if held is True:
                # Step down a little before others may take over (clock skew margin).
                self._deadline = started + self.lease_seconds * 0.8
                self._set(True)
            elif held is False or time.monotonic() >= self._deadline:
                self._set(False)
            self._stop.wait(self.renew_seconds)
        if self.leading.is_set():
            self._release()
        self._set(False)

    def _try(self) -> bool:
        now = datetime.now(UTC)
        lease = self.kube.get_lease(self.namespace, self.name)
        spec_new = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": _micro(now),
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec_new, "acquireTime": _micro(now), "leaseTransitions": 0},
            }
            try:
                self.kube.create_lease(self.namespace, body)
            except ApiError as exc:
                if exc.status == 409:
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = parse_time(spec.get("renewTime"))
        duration = int(spec.get("leaseDurationSeconds") or self.lease_seconds)
        expired = renewed is None or renewed + timedelta(seconds=duration) <= now
        if holder and holder != self.identity and not expired:
            return False
        new_spec = dict(spec) | spec_new
        if holder != self.identity:
            new_spec["acquireTime"] = _micro(now)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        body = {**lease, "spec": new_spec}
        try:
            self.kube.replace_lease(self.namespace, self.name, body)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _release(self) -> None:
        """Hand over at once on a clean shutdown instead of making the standby wait."""
        try:
            lease = self.kube.get_lease(self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = dict(lease["spec"]) | {"holderIdentity": None, "leaseDurationSeconds": 1}
                self.kube.replace_lease(self.namespace, self.name, {**lease, "spec": spec})
        except Exception as exc:
            log.info("lease release failed: %s", exc)
