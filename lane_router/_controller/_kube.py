"""The few Kubernetes API calls the controller makes, through the official client.

Responses are read as raw JSON (``_preload_content=False``): the controller works on plain dicts
(what the renderer produces and compares), and skipping the client's model deserialization keeps
a relist of thousands of Deployments cheap.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

__all__ = [
    "CONFIGMAPS",
    "DEPLOYMENTS",
    "DESTINATIONRULES",
    "FIELD_MANAGER",
    "LANES_GROUP",
    "LANES_VERSION",
    "RESOURCES",
    "SERVICES",
    "TRAFFICCANARIES",
    "TRAFFICLANES",
    "VIRTUALSERVICES",
    "ApiError",
    "Kube",
    "Resource",
    "Watch",
]

FIELD_MANAGER = "traffic-lanes"
LANES_GROUP = "lanes.traffic-lanes.io"
LANES_VERSION = "v1alpha1"
_APPLY = "application/apply-patch+yaml"
_MERGE = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    # A newer CRD the cluster may not have yet (the controller upgraded before the CRDs): its
    # 404 is an empty list, so the rest keeps routing, and the informer keeps retrying.
    optional: bool = False
    # Watch only these (a label selector): the controller lists no ConfigMap but its own.
    label_selector: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


TRAFFICLANES = Resource(LANES_GROUP, LANES_VERSION, "trafficlanes", "TrafficLane")
TRAFFICCANARIES = Resource(
    LANES_GROUP, LANES_VERSION, "trafficcanaries", "TrafficCanary", optional=True
)
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SERVICES = Resource("", "v1", "services", "Service")
VIRTUALSERVICES = Resource("networking.istio.io", "v1", "virtualservices", "VirtualService")
DESTINATIONRULES = Resource("networking.istio.io", "v1", "destinationrules", "DestinationRule")
# Sidecar data plane only (``--data-plane sidecar``): the ConfigMaps the controller writes.
CONFIGMAPS = Resource(
    "", "v1", "configmaps", "ConfigMap", label_selector="app.kubernetes.io/managed-by=traffic-lanes"
)
RESOURCES = {
    r.kind: r
    for r in (
        TRAFFICLANES,
        TRAFFICCANARIES,
        DEPLOYMENTS,
        SERVICES,
        VIRTUALSERVICES,
        DESTINATIONRULES,
        CONFIGMAPS,
    )
}


class ApiError(Exception):
    """A failed API call: ``status`` is the HTTP status (0 for a transport error)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


def _raw_json(resp: Any) -> Any:
    """The JSON of a ``_preload_content=False`` response (a urllib3 response, whatever the
    client's annotations say: its model classes are skipped for speed)."""
    return json.loads(resp.data)


def _model(cls: Any, body: Mapping[str, Any]) -> Any:
    """A client model object from a plain dict (never None for a dict)."""
    return cls.from_dict(dict(body))


def _error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiException):
        message, reason = "", exc.reason or ""
        try:
            body = json.loads(exc.body or b"{}")
            message = body.get("message", "")
            reason = body.get("reason", reason)
        except (ValueError, AttributeError):
            pass
        return ApiError(int(exc.status or 0), str(reason), message)
    return ApiError(0, type(exc).__name__, str(exc))


class Watch:
    """One watch stream: iterate its events; ``close()`` from any thread ends it."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self._closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        buf = b""
        try:
            for chunk in self._response.stream(65536, decode_content=True):
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 1 :]
                    if line.strip():
                        yield json.loads(line)
            if buf.strip():
                yield json.loads(buf)
        except Exception as exc:
            if self._closed:
                return
            raise _error(exc) from exc
        finally:
            self._response.release_conn()

    def close(self) -> None:
        self._closed = True
        # urllib3 >= 2.3 can shut the socket down from another thread, which unblocks a read;
        # older versions only close it (the read then ends at the next event or bookmark).
        shutdown = getattr(self._response, "shutdown", None) or self._response.close
        with contextlib.suppress(Exception):  # already closed
            shutdown()


class Kube:
    """Thin, typed access to the API server. Every method raises :class:`ApiError`."""

    def __init__(self, api_client: client.ApiClient, *, request_timeout: float = 30.0) -> None:
        self.api_client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._coord = client.CoordinationV1Api(api_client)
        self._timeout = request_timeout

    # -- reads ----------------------------------------------------------------------------

    def _list_call(self, res: Resource, namespace: str | None, **kw: Any) -> Any:
        kw["_preload_content"] = False
        if res.label_selector:
            kw["label_selector"] = res.label_selector
        if res.kind == "Deployment":
            if namespace:
                return self._apps.list_namespaced_deployment(namespace, **kw)
            return self._apps.list_deployment_for_all_namespaces(**kw)
        if res.kind == "Service":
            if namespace:
                return self._core.list_namespaced_service(namespace, **kw)
            return self._core.list_service_for_all_namespaces(**kw)
        if res.kind == "ConfigMap":
            if namespace:
                return self._core.list_namespaced_config_map(namespace, **kw)
            return self._core.list_config_map_for_all_namespaces(**kw)
        if namespace:
            return self._custom.list_namespaced_custom_object(
                res.group, res.version, namespace, res.plural, **kw
            )
        return self._custom.list_cluster_custom_object(res.group, res.version, res.plural, **kw)

    def list(self, res: Resource, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """Every object and the list's resourceVersion (to start a watch from)."""
        try:
            resp = self._list_call(res, namespace, _request_timeout=self._timeout)
            body = _raw_json(resp)
        except Exception as exc:
            raise _error(exc) from exc
        items = body.get("items") or []
        for item in items:  # list items omit kind/apiVersion
            item.setdefault("kind", res.kind)
            item.setdefault("apiVersion", res.api_version)
        return items, str(body.get("metadata", {}).get("resourceVersion", ""))

    def watch(
        self, res: Resource, namespace: str | None, resource_version: str, timeout_seconds: int
    ) -> Watch:
        try:
            resp = self._list_call(
                res,
                namespace,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                _request_timeout=(self._timeout, timeout_seconds + self._timeout),
            )
        except Exception as exc:
            raise _error(exc) from exc
        return Watch(resp)

    # -- writes ---------------------------------------------------------------------------

    def apply(self, res: Resource, obj: Mapping[str, Any], *, force: bool) -> dict[str, Any]:
        """Server-side apply as field manager ``traffic-lanes``; returns the stored object."""
        md = obj["metadata"]
        if not res.group:
            return self._apply_core(res, obj, force=force)
        try:
            resp = self._custom.patch_namespaced_custom_object(
                res.group,
                res.version,
                md["namespace"],
                res.plural,
                md["name"],
                dict(obj),
                field_manager=FIELD_MANAGER,
                force=force,
                _content_type=_APPLY,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            return _raw_json(resp)
        except Exception as exc:
            raise _error(exc) from exc

    def _core_call(self, verb: str, res: Resource) -> Any:
        """``CoreV1Api.<verb>_namespaced_<kind>`` (Services and ConfigMaps: the core group)."""
        kind = {"Service": "service", "ConfigMap": "config_map"}[res.kind]
        return getattr(self._core, f"{verb}_namespaced_{kind}")

    def _apply_core(self, res: Resource, obj: Mapping[str, Any], *, force: bool) -> dict[str, Any]:
        md = obj["metadata"]
        try:
            resp = self._core_call("patch", res)(
                md["name"],
                md["namespace"],
                dict(obj),
                field_manager=FIELD_MANAGER,
                force=force,
                _content_type=_APPLY,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            return json.loads(resp.data)
        except Exception as exc:
            raise _error(exc) from exc

    def delete(
        self, res: Resource, namespace: str, name: str, *, resource_version: str | None
    ) -> None:
        body: Any = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        if not res.group:
            try:
                self._core_call("delete", res)(
                    name,
                    namespace,
                    body=body,
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            except Exception as exc:
                raise _error(exc) from exc
            return
        try:
            self._custom.delete_namespaced_custom_object(
                res.group,
                res.version,
                namespace,
                res.plural,
                name,
                body=body,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        except Exception as exc:
            raise _error(exc) from exc

    def patch_lane_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.patch_status(TRAFFICLANES, namespace, name, status)

    def patch_status(
        self, res: Resource, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """JSON merge patch of a custom object's ``status`` subresource."""
        try:
            self._custom.patch_namespaced_custom_object_status(
                res.group,
                res.version,
                namespace,
                res.plural,
                name,
                {"status": dict(status)},
                _content_type=_MERGE,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        except Exception as exc:
            raise _error(exc) from exc

    def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        try:
            self._core.create_namespaced_event(
                namespace,
                _model(client.CoreV1Event, body),
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        except Exception as exc:
            raise _error(exc) from exc

    # -- leases ---------------------------------------------------------------------------

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            resp = self._coord.read_namespaced_lease(
                name, namespace, _preload_content=False, _request_timeout=self._timeout
            )
            return _raw_json(resp)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _error(exc) from exc
        except Exception as exc:
            raise _error(exc) from exc

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            resp = self._coord.create_namespaced_lease(
                namespace,
                _model(client.V1Lease, body),
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            return _raw_json(resp)
        except Exception as exc:
            raise _error(exc) from exc

    def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            resp = self._coord.replace_namespaced_lease(
                name,
                namespace,
                _model(client.V1Lease, body),
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            return _raw_json(resp)
        except Exception as exc:
            raise _error(exc) from exc
