"""The reconcile loop: cluster objects in, Istio routes out, one host at a time.

Threads: one informer per watched resource feeds *dirty* marks (a TrafficLane marks its whole
namespace; a TrafficCanary, Deployment, Service, VirtualService or DestinationRule only its
host); one worker
drains them, so a burst of changes costs one pass and a Deployment change re-renders one host.
Only the Lease holder writes. A host whose write failed is retried with backoff; nothing else
waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lane_router._controller._canary import INVALID
from lane_router._controller._desired import desired_host
from lane_router._controller._informer import Backoff, Informer, Key
from lane_router._controller._kube import (
    CONFIGMAPS,
    DEPLOYMENTS,
    DESTINATIONRULES,
    RESOURCES,
    SERVICES,
    TRAFFICCANARIES,
    TRAFFICLANES,
    VIRTUALSERVICES,
    ApiError,
    Kube,
    Resource,
)
from lane_router._controller._leader import LeaderElector
from lane_router._controller._metrics import Metrics
from lane_router._controller._model import NamespaceModel, namespace_model, pod_labels
from lane_router._controller._plan import HostPlan, host_keys, is_ours, plan_host
from lane_router._controller._sidecar_plane import SERVICE_LABEL, plan_sidecar
from lane_router._controller._status import canary_status, lane_status, status_patch
from lane_router.render import MANAGED_BY_SELECTOR
from lanes_sdk.wire import DEFAULT_BAGGAGE_KEY, DEFAULT_BASELINE, DEFAULT_HEADER

__all__ = ["MODEL_RESOURCES", "Controller", "ControllerOptions", "read_model"]

# What a namespace's model is built from (the other watched kinds are the controller's outputs).
MODEL_RESOURCES = (TRAFFICLANES, TRAFFICCANARIES, DEPLOYMENTS, SERVICES)

log = logging.getLogger("lanes.controller")


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerOptions:
    identity: str
    namespace: str | None = None  # None: every namespace
    leader_election: bool = True
    lease_namespace: str = "default"
    lease_name: str = "traffic-lanes-controller"
    lease_seconds: int = 15
    renew_seconds: float = 5.0
    baseline: str = DEFAULT_BASELINE
    header: str = DEFAULT_HEADER
    baggage_key: str = DEFAULT_BAGGAGE_KEY
    app_label: str = "app"
    lane_label: str = "lane"
    watch_timeout: int = 300
    backoff_cap: float = 5.0
    # "istio": VirtualServices and DestinationRules. "sidecar": per-lane Services and a
    # ConfigMap of lanes.yaml per namespace for `lanes sidecar` (no mesh needed).
    data_plane: str = "istio"
    configmap_name: str = "traffic-lanes"


def read_model(
    kube: Kube,
    namespace: str,
    *,
    baseline: str = DEFAULT_BASELINE,
    header: str = DEFAULT_HEADER,
    baggage_key: str = DEFAULT_BAGGAGE_KEY,
    app_label: str = "app",
    lane_label: str = "lane",
) -> NamespaceModel:
    """One namespace's model from a fresh list of its objects, as the controller builds it from
    its informers (``lanes ui --kube``). An absent TrafficCanary CRD counts as no canary, as in
    the controller; any other failure raises :class:`ApiError`."""
    objs: dict[str, list[dict[str, Any]]] = {}
    for res in MODEL_RESOURCES:
        try:
            objs[res.kind], _ = kube.list(res, namespace)
        except ApiError as exc:
            if not (res.optional and exc.status == 404):
                raise
            objs[res.kind] = []
    return namespace_model(
        namespace,
        objs,
        now=datetime.now(UTC),
        baseline=baseline,
        header=header,
        baggage_key=baggage_key,
        app_label=app_label,
        lane_label=lane_label,
    )


class _NotLeader(Exception):
    pass


class Controller:
    def __init__(self, kube: Kube, options: ControllerOptions, *, metrics: Metrics | None = None):
        self.kube, self.options = kube, options
        self.metrics = metrics or Metrics()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._dirty_ns: set[str] = set()
        self._dirty_hosts: set[Key] = set()
        self._status_ns: set[str] = set()
        self._full = True
        self._retry_at: float | None = None
        self._retry_backoff = Backoff(base=0.05, cap=options.backoff_cap)
        self._expiry: dict[str, datetime] = {}
        self._conflicts: dict[Key, tuple[str, ...]] = {}
        self._failed: set[Key] = set()
        self._evented: set[str] = set()
        # (kind, namespace, name, message) of bad TrafficLanes/TrafficCanaries already evented
        self._spec_evented: set[tuple[str, str, str, str]] = set()
        self._models: dict[str, NamespaceModel] = {}  # reused while lanes/Deployments/Services stay
        self.informers = {
            r.kind: Informer(
                kube,
                r,
                namespace=options.namespace,
                on_change=self._changed,
                stop=self._stop,
                metrics=self.metrics,
                watch_timeout=options.watch_timeout,
                backoff_cap=options.backoff_cap,
            )
            for r in RESOURCES.values()
            if r not in self._unused(options.data_plane)
        }
        self.elector: LeaderElector | None = None
        if options.leader_election:
            self.elector = LeaderElector(
                kube,
                namespace=options.lease_namespace,
                name=options.lease_name,
                identity=options.identity,
                stop=self._stop,
                lease_seconds=options.lease_seconds,
                renew_seconds=options.renew_seconds,
                on_change=self._leadership,
            )
        self._worker = threading.Thread(target=self._run, name="reconcile", daemon=True)
        self.passes = 0  # completed reconcile passes
        self._busy = False

    @staticmethod
    def _unused(data_plane: str) -> tuple[Resource, ...]:
        if data_plane == "sidecar":
            return (VIRTUALSERVICES, DESTINATIONRULES)
        if data_plane == "istio":
            return (CONFIGMAPS,)
        raise ValueError(f"unknown data plane {data_plane!r} (istio or sidecar)")

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        for inf in self.informers.values():
            inf.start()
        if self.elector is not None:
            self.elector.start()
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for inf in self.informers.values():
            inf.close()
        threads = [self._worker, *(i.thread for i in self.informers.values())]
        if self.elector is not None:
            threads.append(self.elector.thread)
        for t in threads:
            if t.is_alive():
                t.join(timeout)

    def healthy(self) -> bool:
        threads = [self._worker, *(i.thread for i in self.informers.values())]
        if self.elector is not None:
            threads.append(self.elector.thread)
        return not self._stop.is_set() and all(t.is_alive() for t in threads)

    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader()

    def idle(self) -> bool:
        """Nothing to do right now and no pass running (a scheduled retry counts as work)."""
        with self._cond:
            due, _ = self._due()
            return not self._busy and not due and self._retry_at is None

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values())

    # -- change intake (informer threads) ---------------------------------------------------

    def _leadership(self, leading: bool) -> None:
        self.metrics.set("lanes_controller_leader", 1.0 if leading else 0.0)
        if leading:
            with self._cond:
                self._full = True
                self._cond.notify_all()

    def _changed(
        self, res: Resource, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        with self._cond:
            for obj in (old, new):
                if obj is None:
                    continue
                ns = obj.get("metadata", {}).get("namespace", "")
                name = obj.get("metadata", {}).get("name", "")
                if res is TRAFFICLANES:
                    if old is not None and new is not None and old.get("spec") == new.get("spec"):
                        break  # a status write (often ours): nothing to route differently
                    self._dirty_ns.add(ns)
                elif res is TRAFFICCANARIES:
                    if old is not None and new is not None and old.get("spec") == new.get("spec"):
                        break
                    spec = obj.get("spec")
                    svc = spec.get("service") if isinstance(spec, dict) else None
                    if isinstance(svc, str):
                        self._dirty_hosts.add((ns, svc))
                    self._status_ns.add(ns)
                elif res is DEPLOYMENTS:
                    app = pod_labels(obj).get(self.options.app_label)
                    if isinstance(app, str):
                        self._dirty_hosts.add((ns, app))
                        self._status_ns.add(ns)
                elif res is SERVICES:
                    owner = (obj["metadata"].get("labels") or {}).get(SERVICE_LABEL)
                    self._dirty_hosts.add((ns, owner if is_ours(obj) and owner else name))
                    self._status_ns.add(ns)
                elif res is CONFIGMAPS:
                    self._dirty_ns.add(ns)
                else:
                    self._dirty_hosts.add((ns, name))
                    self._dirty_hosts.update((ns, h) for h in host_keys(obj))
            self._cond.notify_all()

    # -- the worker -------------------------------------------------------------------------

    def _due(self) -> tuple[bool, float | None]:
        """Is there work now; else how long until there may be (called under the lock)."""
        now = time.monotonic()
        waits: list[float] = []
        if self._retry_at is not None:
            if self._retry_at <= now:
                return True, None
            waits.append(self._retry_at - now)
        if self._expiry:
            soonest = min(self._expiry.values())
            delta = (soonest - datetime.now(UTC)).total_seconds()
            if delta <= 0:
                return True, None
            waits.append(delta + 0.01)
        work = self._full or self._dirty_ns or self._dirty_hosts or self._status_ns
        return bool(work), (min(waits) if waits else None)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self._stop.is_set():
                    ready = self.synced() and self.is_leader()
                    due, wait = self._due()
                    if ready and due:
                        break
                    # Poll while not ready: leadership and sync are decided on other threads.
                    self._cond.wait(0.05 if not ready else wait)
                if self._stop.is_set():
                    return
                self._busy = True
                full, self._full = self._full, False
                dirty_ns, self._dirty_ns = self._dirty_ns, set()
                hosts, self._dirty_hosts = self._dirty_hosts, set()
                status_ns, self._status_ns = self._status_ns, set()
                retry = self._retry_at is not None and self._retry_at <= time.monotonic()
                if retry:
                    self._retry_at = None
                    hosts |= self._failed
                now = datetime.now(UTC)
                for ns, at in list(self._expiry.items()):
                    if at <= now:
                        dirty_ns.add(ns)
                        del self._expiry[ns]
            try:
                self._pass(full, dirty_ns, hosts, status_ns)
                with self._cond:
                    self._busy = False
            except _NotLeader:
                with self._cond:  # someone else writes now; start over if we lead again
                    self._full = True
                    self._busy = False
            except Exception:  # a bug must not stop the controller: retry the lot later
                log.exception("reconcile pass failed")
                with self._cond:
                    self._dirty_ns |= dirty_ns
                    self._dirty_hosts |= hosts
                    self._status_ns |= status_ns
                    self._full = self._full or full
                    self._retry_at = time.monotonic() + self._retry_backoff.next()
                    self._busy = False

    def _pass(self, full: bool, dirty_ns: set[str], hosts: set[Key], status_ns: set[str]) -> None:
        started = time.process_time()
        by_ns: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for kind, inf in self.informers.items():
            for obj in inf.items():
                by_ns[obj["metadata"].get("namespace", "")][kind].append(obj)
        if full:
            dirty_ns = dirty_ns | set(by_ns)
        targets: dict[str, set[str]] = defaultdict(set)
        for ns, host in hosts:
            targets[ns].add(host)
        broken = False
        for ns in sorted(set(targets) | dirty_ns | status_ns):
            try:
                self._pass_namespace(
                    ns, by_ns.get(ns, {}), targets.get(ns, set()), ns in dirty_ns, ns in status_ns
                )
            except _NotLeader:
                raise
            except Exception:  # a bug or an object nobody foresaw: this namespace only
                log.exception("reconcile of namespace %s failed; retrying it later", ns)
                broken = True
                with self._cond:
                    self._dirty_ns.add(ns)
                    self._retry_at = time.monotonic() + self._retry_backoff.next()
        self.metrics.inc("lanes_controller_reconcile_seconds_total", time.process_time() - started)
        self.metrics.set("lanes_controller_conflicts", float(len(self._conflicts)))
        with self._cond:
            if broken:
                pass  # the retry is scheduled; keep the backoff growing
            elif self._failed:
                if self._retry_at is None:
                    self._retry_at = time.monotonic() + self._retry_backoff.next()
            else:
                self._retry_backoff.reset()
            self.passes += 1
            self._cond.notify_all()

    def _pass_namespace(
        self,
        ns: str,
        objs: Mapping[str, list[dict[str, Any]]],
        targets: set[str],
        dirty: bool,
        status: bool,
    ) -> None:
        model = self._models.get(ns)
        if model is None or dirty or status:
            model = self._models[ns] = self._model(ns, objs)
        if model.next_expiry is not None:
            with self._cond:
                self._expiry[ns] = model.next_expiry
        ns_hosts = set(targets)
        if dirty:
            ns_hosts |= set(model.topology.services if model.topology else ())
            ns_hosts |= {
                o["metadata"]["name"]
                for k in ("VirtualService", "DestinationRule")
                for o in objs.get(k, ())
                if is_ours(o)
            }
        if self.options.data_plane == "sidecar":
            changed = self._reconcile_sidecar(ns, model, ns_hosts, objs)
        else:
            changed = self._reconcile_hosts(ns, model, ns_hosts, objs)
        if dirty or status or changed:
            self._update_statuses(ns, model, objs)

    def _model(self, ns: str, objs: Mapping[str, list[dict[str, Any]]]) -> NamespaceModel:
        return namespace_model(
            ns,
            objs,
            now=datetime.now(UTC),
            baseline=self.options.baseline,
            header=self.options.header,
            baggage_key=self.options.baggage_key,
            app_label=self.options.app_label,
            lane_label=self.options.lane_label,
        )

    def _reconcile_hosts(
        self, ns: str, model: NamespaceModel, hosts: Iterable[str], objs: Mapping[str, list]
    ) -> bool:
        """Plan and write each host; True when a host's conflict or failure state changed."""
        if not hosts:
            return False
        others: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for kind in ("VirtualService", "DestinationRule"):
            for o in objs.get(kind, ()):
                if not is_ours(o):
                    for h in host_keys(o):
                        if h != o["metadata"]["name"]:
                            others[h].append(o)
        export_to = ["."] if self.options.namespace else None
        changed = False
        for host in sorted(hosts):
            key = (ns, host)
            desired = desired_host(
                model.topology, host, lane_label=self.options.lane_label, export_to=export_to
            )
            plan = plan_host(
                ns,
                host,
                desired=desired,
                current_dr=self.informers["DestinationRule"].get(key),
                current_vs=self.informers["VirtualService"].get(key),
                others=others.get(host, ()),
            )
            ok, conflicts = self._execute(plan)
            changed |= self._record(key, conflicts, ok)
            self.metrics.inc(
                "lanes_controller_reconciles_total",
                result="conflict" if conflicts else ("ok" if ok else "error"),
            )
        self.metrics.set(
            "lanes_controller_hosts",
            float(sum(1 for o in self.informers["VirtualService"].items() if is_ours(o))),
        )
        return changed

    def _record(self, key: Key, conflicts: tuple[str, ...], ok: bool) -> bool:
        """Keep a host's conflict and failure state (reporting new conflicts); True when it
        changed, so the lanes' status is written again."""
        before = (self._conflicts.get(key, ()), key in self._failed)
        if conflicts:
            self._conflicts[key] = conflicts
            self._report_conflicts(key[0], key[1], conflicts)
        else:
            self._conflicts.pop(key, None)
        (self._failed.discard if ok else self._failed.add)(key)
        return before != (self._conflicts.get(key, ()), key in self._failed)

    def _reconcile_sidecar(
        self, ns: str, model: NamespaceModel, hosts: Iterable[str], objs: Mapping[str, list]
    ) -> bool:
        """One plan per namespace (its ConfigMap holds every host); True when a host's
        conflict or failure state changed."""
        if not hosts:
            return False
        plan = plan_sidecar(
            ns,
            model.topology,
            services=objs.get("Service", ()),
            current_configmap=self.informers["ConfigMap"].get((ns, self.options.configmap_name)),
            app_label=self.options.app_label,
            lane_label=self.options.lane_label,
            configmap_name=self.options.configmap_name,
        )
        ok, _ = self._execute(HostPlan(ns, "", plan.actions))
        names = set(model.topology.services if model.topology else ()) | set(hosts)
        names |= {h for n, h in self._conflicts if n == ns} | {
            h for n, h in self._failed if n == ns
        }
        changed = False
        for host in sorted(names):
            changed |= self._record((ns, host), (plan.conflicts or {}).get(host, ()), ok)
        self.metrics.inc("lanes_controller_reconciles_total", result="ok" if ok else "error")
        return changed

    def _execute(self, plan: HostPlan) -> tuple[bool, tuple[str, ...]]:
        if plan.conflicts:
            return True, plan.conflicts
        for action in plan.actions:
            if not self.is_leader():
                raise _NotLeader
            res = RESOURCES[action.kind]
            inf = self.informers[action.kind]
            try:
                if action.verb == "apply":
                    assert action.body is not None
                    stored = self.kube.apply(res, action.body, force=action.force)
                    inf.observe(stored)
                else:
                    try:
                        self.kube.delete(
                            res,
                            action.namespace,
                            action.name,
                            resource_version=action.resource_version,
                        )
                    except ApiError as exc:
                        if exc.status != 404:
                            raise
                    inf.forget((action.namespace, action.name))
                self.metrics.inc(
                    "lanes_controller_writes_total", verb=action.verb, kind=action.kind
                )
                log.info(
                    "%s %s %s/%s (%s)",
                    action.verb,
                    action.kind,
                    action.namespace,
                    action.name,
                    action.step,
                )
            except ApiError as exc:
                if exc.status == 409 and action.verb == "apply" and not action.force:
                    # Someone else created it since we looked: theirs, not ours to take.
                    who = f"{action.kind} {action.namespace}/{action.name}"
                    return True, (f"{who} (field conflict: {exc.message or exc.reason})",)
                log.warning(
                    "%s %s %s/%s failed: %s",
                    action.verb,
                    action.kind,
                    action.namespace,
                    action.name,
                    exc,
                )
                return False, ()
        return True, ()

    # -- reporting ----------------------------------------------------------------------------

    def _report_conflicts(self, ns: str, host: str, conflicts: tuple[str, ...]) -> None:
        for c in conflicts:
            if c in self._evented:
                continue
            kind, _, ref = c.partition(" ")
            name = ref.split("/", 1)[-1].split(" ", 1)[0]
            res = RESOURCES.get(kind, VIRTUALSERVICES)
            message = f"traffic-lanes leaves host {host} alone: {c} lacks {MANAGED_BY_SELECTOR}"
            if self._event(ns, res, kind, name, "ManagedByOther", message):
                self._evented.add(c)

    def _report_invalid(self, ns: str, model: NamespaceModel) -> None:
        """One Warning Event per TrafficLane/TrafficCanary the controller cannot use (again when
        its problem changes), besides its status: ``kubectl get events`` shows it too."""
        bad = {
            ("TrafficLane", ns, name, info.problem)
            for name, info in model.lanes.items()
            if info.problem
        } | {
            ("TrafficCanary", ns, name, info.message)
            for name, info in model.canaries.items()
            if info.reason == INVALID
        }
        for key in [k for k in self._spec_evented if k[1] == ns and k not in bad]:
            self._spec_evented.discard(key)  # fixed or gone: report again if it comes back
        for key in sorted(bad - self._spec_evented):
            kind, _, name, problem = key
            res = TRAFFICLANES if kind == "TrafficLane" else TRAFFICCANARIES
            message = f"{kind} {ns}/{name} is not used: {problem}"
            if self._event(ns, res, kind, name, "InvalidSpec", message):
                self._spec_evented.add(key)

    def _event(
        self, ns: str, res: Resource, kind: str, name: str, reason: str, message: str
    ) -> bool:
        """Record a Warning Event about one object; False (logged) when the API refuses it."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": res.api_version,
                "kind": kind,
                "namespace": ns,
                "name": name,
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": "traffic-lanes"},
            "reportingComponent": "traffic-lanes",
            "reportingInstance": self.options.identity,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.kube.create_event(ns, body)
        except ApiError as exc:
            log.warning("event for %s %s/%s not recorded: %s", kind, ns, name, exc)
            return False
        return True

    def _update_statuses(
        self, ns: str, model: NamespaceModel, objs: Mapping[str, list[dict[str, Any]]]
    ) -> None:
        conflicts = {h: c for (n, h), c in self._conflicts.items() if n == ns}
        failed = {h for n, h in self._failed if n == ns}
        for c in [c for c in self._evented if c.split(" ", 1)[-1].startswith(f"{ns}/")]:
            if not any(c in cs for cs in conflicts.values()):
                self._evented.discard(c)  # resolved: report again if it comes back
        self._report_invalid(ns, model)
        now = datetime.now(UTC)
        for res, make in ((TRAFFICLANES, lane_status), (TRAFFICCANARIES, canary_status)):
            for obj in objs.get(res.kind, ()):
                status = make(obj, model, conflicts=conflicts, failed=failed, now=now)
                self._write_status(res, ns, obj, status)

    def _write_status(self, res: Resource, ns: str, obj: dict, status: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        patch = status_patch(obj.get("status") or {}, status)
        if patch is not None:
            if not self.is_leader():
                raise _NotLeader
            try:
                self.kube.patch_status(res, ns, name, patch)
                self.metrics.inc("lanes_controller_writes_total", verb="status", kind=res.kind)
            except ApiError as exc:
                if exc.status != 404:
                    log.warning("status of %s %s/%s: %s", res.kind, ns, name, exc)
                    with self._cond:
                        self._status_ns.add(ns)
                        self._retry_at = time.monotonic() + self._retry_backoff.next()
