"""An HTTP-level Kubernetes API server double for the controller tests.

The controller under test talks to it with the real ``kubernetes`` client over loopback TCP, so
everything between the controller and the wire is the real thing. The double implements what the
controller relies on, strictly: list and watch with resourceVersion (history replay, BOOKMARK
events, ``410 Gone`` once a version is compacted away), get, create, replace with optimistic
concurrency (409 on a stale resourceVersion), server-side apply with field managers (409 on a
field owned by another manager unless forced), JSON merge patch (``/status`` too), delete with
preconditions, Leases and Events. It validates what is written: Istio objects against the Istio
CRDs (closed), TrafficLanes and TrafficCanaries against our CRDs (a status write only on its
status, as with CRD validation ratcheting). Faults on demand: answer N requests with 500, drop
every watch, compact history, or restart (all connections cut) when a given request arrives.

Not covered (a real cluster shows them): admission webhooks, RBAC enforcement, field-level
managedFields merging of lists by key, pruning of unknown fields, Istio acting on the objects.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml
from aiohttp import web
from k8s_schemas import REPO, crd_validator, istio_validator, k8s_validator

__all__ = ["Entry", "KubeDouble"]

# (group, version, plural) -> kind
KINDS = {
    ("", "v1", "services"): "Service",
    ("", "v1", "configmaps"): "ConfigMap",
    ("", "v1", "events"): "Event",
    ("", "v1", "namespaces"): "Namespace",
    ("apps", "v1", "deployments"): "Deployment",
    ("coordination.k8s.io", "v1", "leases"): "Lease",
    ("lanes.traffic-lanes.io", "v1alpha1", "trafficlanes"): "TrafficLane",
    ("lanes.traffic-lanes.io", "v1alpha1", "trafficcanaries"): "TrafficCanary",
    ("networking.istio.io", "v1", "virtualservices"): "VirtualService",
    ("networking.istio.io", "v1", "destinationrules"): "DestinationRule",
}
PLURAL = {kind: key for key, kind in KINDS.items()}
# List items lack kind.
_CORE_LIST_KINDS = {"Service", "ConfigMap", "Event", "Namespace", "Deployment", "Lease"}
_CRD = str(REPO / "k8s" / "crd.yaml")
_CANARY_CRD = str(REPO / "k8s" / "crd-canary.yaml")
_DROP, _END = object(), object()


@dataclass
class Entry:
    """One request as the double saw it."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    agent: str
    kind: str = ""
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    status: int = 0
    body: Any = None  # the parsed request body of a write
    committed: bool = False  # applied although never answered (restart_on(commit=True))
    at: float = field(default_factory=time.monotonic)

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")

    @property
    def write(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


def _leaves(obj: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    """Field paths of an applied configuration; lists are atomic (no list-map keys here)."""
    if isinstance(obj, dict) and obj:
        out: dict[tuple, Any] = {}
        for k, v in obj.items():
            out.update(_leaves(v, (*prefix, k)))
        return out
    return {prefix: obj}


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        if not isinstance(obj, dict) or p not in obj:
            return _MISSING
        obj = obj[p]
    return obj


_MISSING = object()


def _set(obj: dict, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        obj = obj.setdefault(p, {})
    obj[path[-1]] = copy.deepcopy(value)


def _unset(obj: dict, path: tuple) -> None:
    parents = []
    for p in path[:-1]:
        if not isinstance(obj.get(p), dict):
            return
        parents.append((obj, p))
        obj = obj[p]
    obj.pop(path[-1], None)
    for parent, key in reversed(parents):  # drop emptied maps
        if parent[key] == {}:
            del parent[key]
        else:
            break


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge_patch(out.get(k), v)
    return out


def _fields_of(obj: dict) -> dict[tuple, Any]:
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    md = obj.get("metadata") or {}
    for k in ("labels", "annotations"):
        if md.get(k):
            body.setdefault("metadata", {})[k] = md[k]
    return _leaves(body) if body else {}


class KubeDouble:
    def __init__(self, *, bookmark_interval: float = 0.25, validate: bool = True) -> None:
        self.bookmark_interval = bookmark_interval
        self.validate = validate
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.rv = 1
        self.compacted = 0  # watches from a resourceVersion below this get 410
        self.store: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, ns, name) -> obj
        self.owners: dict[tuple[str, str, str], dict[str, tuple[str, set]]] = {}
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # rv, kind, type, obj
        self.log: list[Entry] = []
        self._watchers: list[tuple[str, str | None, asyncio.Queue]] = []
        self._faults: list[list[Any]] = []  # [remaining, status, predicate]
        self._restart_on: list[tuple[Callable[[Entry], bool], bool]] = []
        self.restarts = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._shutdown())
            self._loop.close()

        self._thread = threading.Thread(target=main, name="kube-double", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the API double did not start")

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def restart(self) -> None:
        """Cut every connection, forget the watch cache (410 for old versions), serve again."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._restart(), self._loop).result(10)

    async def _serve(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        self._end_watches(_DROP)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _restart(self) -> None:
        await self._shutdown()
        with self.lock:
            self.compacted = self.rv + 1
            self.history.clear()
            self.restarts += 1
        await self._serve()

    # -- test-side helpers (any thread) -----------------------------------------------------

    def put(
        self, obj: dict[str, Any], *, manager: str = "kubectl", validate: bool = True
    ) -> dict[str, Any]:
        """Create or update as a user would (an Update by ``manager``, owning every field).
        ``validate=False`` stores what an older, looser schema once admitted."""
        obj = copy.deepcopy(obj)
        kind, md = obj["kind"], obj["metadata"]
        key = (kind, md.get("namespace", ""), md["name"])
        with self.lock:
            current = self.store.get(key)
            if current is not None:
                md["resourceVersion"] = current["metadata"]["resourceVersion"]
                if "status" in current and "status" not in obj:
                    obj["status"] = current["status"]
            err = self._validate(obj) if validate else None
            if err:
                raise ValueError(err)
            self.owners.setdefault(key, {})[manager] = ("Update", set(_fields_of(obj)))
            return copy.deepcopy(self._commit(key, obj, current))

    def remove(self, kind: str, namespace: str, name: str) -> None:
        with self.lock:
            key = (kind, namespace, name)
            if key in self.store:
                self._delete(key)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.store.get((kind, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                copy.deepcopy(o)
                for (k, ns, _), o in sorted(self.store.items(), key=lambda kv: kv[0])
                if k == kind and (namespace is None or ns == namespace)
            ]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every change); its value."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what or predicate}")
                self.changed.wait(min(left, 0.1))

    def fail(self, count: int, *, status: int = 500, when: Callable[[Entry], bool] | None = None):
        """Answer the next ``count`` requests matching ``when`` with ``status``."""
        with self.lock:
            self._faults.append([count, status, when or (lambda e: True)])

    def restart_on(self, when: Callable[[Entry], bool], *, commit: bool) -> None:
        """When a matching request arrives (once): apply it or not, never answer, restart."""
        with self.lock:
            self._restart_on.append((when, commit))

    def drop_watches(self) -> None:
        """Cut every open watch mid-stream (as a proxy or load balancer would)."""
        self._end_watches(_DROP)

    def compact(self) -> None:
        """Forget history: every open watch gets a 410 ERROR event, as do later ones from it."""
        with self.lock:
            self.compacted = self.rv + 1
            self.history.clear()
            watchers = list(self._watchers)
        gone = {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "Expired",
                "code": 410,
                "message": "too old resource version",
            },
        }
        for _, _, q in watchers:
            self._push(q, gone)
            self._push(q, _END)

    def writes(self, kinds: tuple[str, ...] = ("VirtualService", "DestinationRule")) -> list:
        with self.lock:
            return [
                e
                for e in self.log
                if e.write and e.kind in kinds and (200 <= e.status < 300 or e.committed)
            ]

    def active_watches(self) -> int:
        with self.lock:
            return len(self._watchers)

    # -- internals ----------------------------------------------------------------------------

    def _push(self, q: asyncio.Queue, item: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(q.put_nowait, item)

    def _end_watches(self, how: object) -> None:
        with self.lock:
            watchers = list(self._watchers)
        for _, _, q in watchers:
            self._push(q, how)

    def _validate(self, obj: dict[str, Any], under: str = "") -> str | None:
        """Schema errors (``under``: only those below that top-level field; a status write does
        not fail on a spec an older schema admitted, as with CRD validation ratcheting)."""
        if not self.validate:
            return None
        kind = obj.get("kind")
        version = obj.get("apiVersion", "").rpartition("/")[2]
        if kind in ("VirtualService", "DestinationRule"):
            v = istio_validator(kind, version)
        elif kind == "TrafficLane":
            v = crd_validator(_CRD, version)
        elif kind == "TrafficCanary":
            v = crd_validator(_CANARY_CRD, version)
        elif kind in ("Service", "ConfigMap"):
            v = k8s_validator(kind)
        else:
            return None
        slim = {k: val for k, val in obj.items() if k != "metadata"}
        slim["metadata"] = {
            k: obj["metadata"][k]
            for k in ("name", "namespace", "labels", "annotations")
            if k in obj["metadata"]
        }
        errors = [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in v.iter_errors(slim)
            if not under or (e.absolute_path and e.absolute_path[0] == under)
        ]
        return "; ".join(errors) or None

    def _commit(
        self, key: tuple[str, str, str], obj: dict[str, Any], current: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Store ``obj`` (under the lock) with fresh metadata and tell the watchers."""
        self.rv += 1
        md = obj.setdefault("metadata", {})
        md["namespace"], md["name"] = key[1], key[2]
        if current is None:
            md["uid"] = str(uuid.uuid4())
            md["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            md["generation"] = 1
        else:
            for k in ("uid", "creationTimestamp"):
                md[k] = current["metadata"][k]
            gen = current["metadata"].get("generation", 1)
            md["generation"] = gen + (1 if current.get("spec") != obj.get("spec") else 0)
        md["resourceVersion"] = str(self.rv)
        md["managedFields"] = [
            {
                "manager": m,
                "operation": op,
                "apiVersion": obj.get("apiVersion", ""),
                "fieldsType": "FieldsV1",
                "fieldsV1": {},
            }
            for m, (op, _) in sorted(self.owners.get(key, {}).items())
        ]
        self.store[key] = obj
        self._event(key[0], "ADDED" if current is None else "MODIFIED", obj)
        return obj

    def _delete(self, key: tuple[str, str, str]) -> None:
        obj = self.store.pop(key)
        self.owners.pop(key, None)
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._event(key[0], "DELETED", obj)

    def _event(self, kind: str, etype: str, obj: dict[str, Any]) -> None:
        snapshot = copy.deepcopy(obj)
        self.history.append((self.rv, kind, etype, snapshot))
        ns = snapshot["metadata"].get("namespace", "")
        for wkind, wns, q in self._watchers:
            if wkind == kind and (wns is None or wns == ns):
                self._push(q, {"type": etype, "object": snapshot})
        self.changed.notify_all()

    # -- HTTP ------------------------------------------------------------------------------------

    def _route(self, path: str) -> tuple[str, str | None, str, str] | None:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        ns: str | None = None
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
            ns, rest = rest[1], rest[2:]
        if not rest:
            return None
        kind = KINDS.get((group, version, rest[0]))
        if kind is None or len(rest) > 3:
            return None
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        return kind, ns, name, sub

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        entry = Entry(
            request.method,
            request.path,
            dict(request.query),
            request.headers.get("Content-Type", ""),
            request.headers.get("User-Agent", ""),
        )
        route = self._route(request.path)
        if route is not None:
            entry.kind, ns, entry.name, entry.subresource = route
            entry.namespace = ns or ""
        with self.lock:
            self.log.append(entry)
            self.changed.notify_all()
            fault = next((f for f in self._faults if f[0] > 0 and f[2](entry)), None)
            if fault is not None:
                fault[0] -= 1
            crash = next((r for r in self._restart_on if r[0](entry)), None)
            if crash is not None:
                self._restart_on.remove(crash)
        if fault is not None:
            entry.status = fault[1]
            return _status(fault[1], "InternalError", "injected fault")
        body = await request.read()
        if body:
            try:
                entry.body = _load(body)
            except yaml.YAMLError:
                entry.body = body
        if route is None:
            entry.status = 404
            return _status(404, "NotFound", f"no resource at {request.path}")
        if crash is not None:
            if crash[1]:
                with self.lock:
                    done = self._dispatch(request, route, body, entry)
                    entry.committed = 200 <= done.status < 300
            entry.status = 0
            if request.transport is not None:
                request.transport.abort()
            asyncio.get_running_loop().create_task(self._restart())
            return web.Response(status=500)
        if request.method == "GET" and entry.watch:
            return await self._watch(request, route, entry)
        with self.lock:
            resp = self._dispatch(request, route, body, entry)
        entry.status = resp.status
        return resp

    def _dispatch(self, request: web.Request, route, body: bytes, entry: Entry) -> web.Response:
        kind, ns, name, sub = route
        method = request.method
        key = (kind, ns or "", name)
        if method == "GET" and not name:
            return self._list(kind, ns, request.query)
        if method == "GET":
            obj = self.store.get(key)
            if obj is None:
                return _status(404, "NotFound", f"{kind} {ns}/{name} not found")
            return web.json_response(obj)
        if method == "POST" and not name:
            return self._create(kind, ns or "", body, request.query)
        if method == "PUT" and name:
            return self._replace(key, body)
        if method == "PATCH" and name:
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
            if ctype == "application/apply-patch+yaml":
                return self._apply(key, body, request.query, sub)
            if ctype == "application/merge-patch+json":
                return self._merge(key, body, sub)
            return _status(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")
        if method == "DELETE" and name:
            return self._remove(key, body)
        return _status(405, "MethodNotAllowed", f"{method} {request.path}")

    def _list(self, kind: str, ns: str | None, query) -> web.Response:
        selector = query.get("labelSelector")
        items = []
        for (k, ons, _), obj in sorted(self.store.items(), key=lambda kv: kv[0]):
            if k != kind or (ns is not None and ons != ns):
                continue
            if selector and not _selects(selector, obj):
                continue
            item = copy.deepcopy(obj)
            if kind in _CORE_LIST_KINDS:
                item.pop("kind", None)
                item.pop("apiVersion", None)
            items.append(item)
        group, version, _ = PLURAL[kind]
        return web.json_response(
            {
                "kind": f"{kind}List",
                "apiVersion": f"{group}/{version}" if group else version,
                "metadata": {"resourceVersion": str(self.rv)},
                "items": items,
            }
        )

    def _create(self, kind: str, ns: str, body: bytes, query) -> web.Response:
        obj = json.loads(body)
        md = obj.setdefault("metadata", {})
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
        if not md.get("name"):
            return _status(422, "Invalid", "metadata.name: Required value")
        if md.get("namespace", ns) != ns:
            return _status(400, "BadRequest", "the namespace of the object does not match")
        if obj.get("kind") != kind:
            return _status(400, "BadRequest", f"kind {obj.get('kind')!r} does not match {kind}")
        if md.get("resourceVersion"):
            return _status(400, "BadRequest", "resourceVersion should not be set on create")
        key = (kind, ns, md["name"])
        if key in self.store:
            return _status(409, "AlreadyExists", f"{kind} {ns}/{md['name']} already exists")
        err = self._validate(obj)
        if err:
            return _status(422, "Invalid", err)
        manager = query.get("fieldManager", "kubectl-create")
        self.owners[key] = {manager: ("Update", set(_fields_of(obj)))}
        return web.json_response(self._commit(key, obj, None), status=201)

    def _replace(self, key, body: bytes) -> web.Response:
        obj = json.loads(body)
        current = self.store.get(key)
        if current is None:
            return _status(404, "NotFound", f"{key[0]} {key[1]}/{key[2]} not found")
        rv = obj.get("metadata", {}).get("resourceVersion")
        if not rv:
            return _status(
                422, "Invalid", "metadata.resourceVersion: must be specified for an update"
            )
        if rv != current["metadata"]["resourceVersion"]:
            return _status(
                409,
                "Conflict",
                "the object has been modified; please apply your "
                "changes to the latest version and try again",
            )
        err = self._validate(obj)
        if err:
            return _status(422, "Invalid", err)
        if "status" in current:
            obj["status"] = current["status"]
        return web.json_response(self._commit(key, obj, current))

    def _apply(self, key, body: bytes, query, sub: str) -> web.Response:
        manager = query.get("fieldManager")
        if not manager:
            return _status(400, "BadRequest", "PATCH with apply requires a fieldManager")
        if sub:
            return _status(400, "BadRequest", "the double applies only to the main resource")
        force = query.get("force") in ("true", "1")
        try:
            cfg = _load(body)
        except yaml.YAMLError as exc:
            return _status(400, "BadRequest", f"invalid YAML: {exc}")
        kind, ns, name = key
        group, version, _ = PLURAL[kind]
        api_version = f"{group}/{version}" if group else version
        md = cfg.get("metadata") or {}
        if cfg.get("kind") != kind or cfg.get("apiVersion") != api_version:
            return _status(400, "BadRequest", "apiVersion/kind do not match the URL")
        if md.get("name") != name or md.get("namespace", ns) != ns:
            return _status(400, "BadRequest", "metadata.name/namespace do not match the URL")
        current = self.store.get(key)
        if md.get("resourceVersion") and (
            current is None or md["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            return _status(409, "Conflict", "resourceVersion does not match")
        new_fields = _fields_of(cfg)
        owners = self.owners.get(key, {}) if current is not None else {}
        conflicts = []
        for other, (_op, paths) in owners.items():
            if other == manager:
                continue
            for path in paths:
                for mine in new_fields:
                    n = min(len(path), len(mine))
                    if path[:n] == mine[:n] and _get(current, path) != _get(cfg, path):
                        conflicts.append((other, path))
        if conflicts and not force:
            msg = "; ".join(f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts[:5])
            return _status(
                409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): {msg}"
            )
        obj = (
            copy.deepcopy(current)
            if current is not None
            else {
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"name": name, "namespace": ns},
            }
        )
        before = owners.get(manager, ("Apply", set()))[1]
        others_paths = (
            set().union(*(p for m, (_, p) in owners.items() if m != manager)) if owners else set()
        )
        for path in before - set(new_fields) - others_paths:
            _unset(obj, path)
        for path, value in new_fields.items():
            _set(obj, path, value)
        err = self._validate(obj)
        if err:
            return _status(422, "Invalid", err)
        owners = {
            m: (
                op,
                {
                    p
                    for p in paths
                    if not any(
                        p[: min(len(p), len(q))] == q[: min(len(p), len(q))] for q in new_fields
                    )
                },
            )
            for m, (op, paths) in owners.items()
            if m != manager
        }
        owners[manager] = ("Apply", set(new_fields))
        self.owners[key] = {m: v for m, v in owners.items() if v[1] or m == manager}
        status = 201 if current is None else 200
        return web.json_response(self._commit(key, obj, current), status=status)

    def _merge(self, key, body: bytes, sub: str) -> web.Response:
        current = self.store.get(key)
        if current is None:
            return _status(404, "NotFound", f"{key[0]} {key[1]}/{key[2]} not found")
        patch = json.loads(body)
        if sub == "status":
            obj = copy.deepcopy(current)
            obj["status"] = _merge_patch(current.get("status"), patch.get("status"))
            if obj["status"] is None:
                obj.pop("status")
        elif sub:
            return _status(404, "NotFound", f"no subresource {sub}")
        else:
            patch.pop("status", None)
            obj = _merge_patch(current, patch)
        err = self._validate(obj, "status" if sub == "status" else "")
        if err:
            return _status(422, "Invalid", err)
        return web.json_response(self._commit(key, obj, current))

    def _remove(self, key, body: bytes) -> web.Response:
        current = self.store.get(key)
        if current is None:
            return _status(404, "NotFound", f"{key[0]} {key[1]}/{key[2]} not found")
        opts = json.loads(body) if body else {}
        pre = (opts or {}).get("preconditions") or {}
        if (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            return _status(409, "Conflict", "Precondition failed: resourceVersion mismatch")
        if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
            return _status(409, "Conflict", "Precondition failed: UID mismatch")
        self._delete(key)
        return _status(200, "", "deleted")

    async def _watch(self, request: web.Request, route, entry: Entry) -> web.StreamResponse:
        kind, ns, _, _ = route
        rv_text = request.query.get("resourceVersion", "")
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        q: asyncio.Queue = asyncio.Queue()
        with self.lock:
            if rv_text not in ("", "0") and not rv_text.isdigit():
                entry.status = 400
                return _status(400, "BadRequest", f"invalid resourceVersion {rv_text!r}")
            backlog: list[Any] = []
            if rv_text in ("", "0"):
                backlog = [
                    {"type": "ADDED", "object": copy.deepcopy(o)}
                    for (k, ons, _), o in sorted(self.store.items(), key=lambda kv: kv[0])
                    if k == kind and (ns is None or ons == ns)
                ]
            elif int(rv_text) < self.compacted:
                backlog = [
                    {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "reason": "Expired",
                            "code": 410,
                            "message": f"too old resource version: {rv_text} ({self.compacted})",
                        },
                    },
                    _END,
                ]
            else:
                since = int(rv_text)
                backlog = [
                    {"type": t, "object": o}
                    for rv, k, t, o in self.history
                    if rv > since
                    and k == kind
                    and (ns is None or o["metadata"].get("namespace", "") == ns)
                ]
            watcher = (kind, ns, q)
            self._watchers.append(watcher)
            self.changed.notify_all()
        for item in backlog:
            q.put_nowait(item)
        entry.status = 200
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait = min(left, self.bookmark_interval) if bookmarks else left
                try:
                    item = await asyncio.wait_for(q.get(), wait)
                except TimeoutError:
                    if bookmarks and time.monotonic() < deadline:
                        with self.lock:
                            rv = str(self.rv)
                        group, version, _ = PLURAL[kind]
                        item = {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": kind,
                                "apiVersion": f"{group}/{version}" if group else version,
                                "metadata": {"resourceVersion": rv},
                            },
                        }
                    else:
                        continue
                if item is _DROP:
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
                if item is _END:
                    break
                await resp.write(json.dumps(item).encode() + b"\n")
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with self.lock:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)
                self.changed.notify_all()
        return resp


def _load(body: bytes) -> Any:
    """An apply body is YAML; clients send JSON (valid YAML 1.2), parsed fast first."""
    try:
        return json.loads(body)
    except ValueError:
        return yaml.load(body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _selects(selector: str, obj: dict[str, Any]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in selector.split(","):
        term = term.strip()
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.strip().rstrip("=")) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term and term not in labels:
            return False
    return True
