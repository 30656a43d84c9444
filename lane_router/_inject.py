"""``lanes inject``: add the lane-routing sidecar to workload manifests (like ``istioctl
kube-inject``), for clusters that run the sidecar data plane without a mesh.

The sidecar is a native sidecar (an init container with ``restartPolicy: Always``, Kubernetes
1.29+): it starts before the app containers and stops after them, so no request leaves the pod
before the proxy listens. It reads the namespace's ``lanes.yaml`` from the ConfigMap the
controller writes (``--data-plane sidecar``) and reloads it when kubelet swaps the volume.
App containers get ``HTTP_PROXY``/``http_proxy`` pointing at it (requests, httpx and urllib honour
them; aiohttp only with ``ClientSession(trust_env=True)``) and ``NO_PROXY``/``no_proxy`` for the
pod's own and the cluster's non-service traffic (the API server, link-local metadata).
The sidecar runs with ``--service $(LANES_SERVICE)``: the pod's ``app`` label (the label the
controller routes by) read through the downward API, or the workload's name when its pods have
no such label, so its request metrics carry the ``source`` label the call graph of ``lanes ui``
draws.

Documents that are not workloads, and workloads already injected the same way, come back
byte for byte; documents are split the way kubectl splits a YAML stream (``---`` lines).
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import yaml

__all__ = [
    "CONFIGMAP_KEY",
    "CONFIGMAP_NAME",
    "CONTAINER_NAME",
    "DEFAULT_NO_PROXY",
    "IMAGE_REPOSITORY",
    "SERVICE_ENV",
    "SIDECAR_LABEL",
    "SKIP_ANNOTATION",
    "InjectError",
    "InjectOptions",
    "default_image",
    "inject_object",
    "inject_stream",
    "sidecar_container",
]

IMAGE_REPOSITORY = "ghcr.io/traffic-lanes/traffic-lanes"
CONTAINER_NAME = "lanes-sidecar"
VOLUME_NAME = "lanes-config"
CONFIGMAP_NAME = "traffic-lanes"
CONFIGMAP_KEY = "lanes.yaml"
MOUNT_PATH = "/etc/traffic-lanes"
SKIP_ANNOTATION = "traffic-lanes.io/inject"
SIDECAR_LABEL = "traffic-lanes.io/sidecar"  # on the pods: what k8s/monitoring's PodMonitor selects
SERVICE_ENV = "LANES_SERVICE"  # expanded by the kubelet in the sidecar's args
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
# Loopback, the API server under every name a client may use, cloud metadata: never the sidecar.
DEFAULT_NO_PROXY = (
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "169.254.169.254",
)
_PROXY_ENV = ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")
_SEPARATOR = re.compile(r"^---(?:[ \t].*)?$", re.MULTILINE)


def default_image() -> str:
    """The image of this very release: the tag is the installed package's version."""
    try:
        version = metadata.version("traffic-lanes")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        version = "latest"
    return f"{IMAGE_REPOSITORY}:{version}"


@dataclass(frozen=True)
class InjectOptions:
    """What the injected sidecar looks like; the defaults match ``k8s/sidecar/``."""

    image: str = field(default_factory=default_image)
    configmap: str = CONFIGMAP_NAME
    proxy_port: int = 15001
    admin_port: int = 15000
    no_proxy: tuple[str, ...] = ()
    cpu_request: str = "50m"
    memory_request: str = "32Mi"
    memory_limit: str = "128Mi"
    app_label: str = "app"  # the pod label naming the service (the controller's --app-label)


def _service_env(opts: InjectOptions, service: str | None) -> dict[str, Any]:
    if service is not None:
        return {"name": SERVICE_ENV, "value": service}
    ref = {"apiVersion": "v1", "fieldPath": f"metadata.labels['{opts.app_label}']"}
    return {"name": SERVICE_ENV, "valueFrom": {"fieldRef": ref}}


def sidecar_container(opts: InjectOptions, service: str | None = None) -> dict[str, Any]:
    """The native sidecar: proxy on the pod's loopback, admin (probes) on the pod's IP.

    ``--service`` is the pod's ``opts.app_label`` label (downward API), or ``service`` when
    given (a workload whose pods have no such label: its name)."""
    probe = {"httpGet": {"path": "/readyz", "port": "lanes-admin"}, "periodSeconds": 2}
    return {
        "name": CONTAINER_NAME,
        "image": opts.image,
        "restartPolicy": "Always",
        "args": [
            "sidecar",
            "--file",
            f"{MOUNT_PATH}/{CONFIGMAP_KEY}",
            "--listen",
            f"127.0.0.1:{opts.proxy_port}",
            "--admin",
            f"0.0.0.0:{opts.admin_port}",
            "--service",
            f"$({SERVICE_ENV})",
        ],
        "env": [_service_env(opts, service)],
        "ports": [{"name": "lanes-admin", "containerPort": opts.admin_port, "protocol": "TCP"}],
        "startupProbe": {**probe, "failureThreshold": 30},
        "readinessProbe": probe,
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "lanes-admin"},
            "periodSeconds": 10,
        },
        "resources": {
            "requests": {"cpu": opts.cpu_request, "memory": opts.memory_request},
            "limits": {"memory": opts.memory_limit},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": VOLUME_NAME, "mountPath": MOUNT_PATH, "readOnly": True}],
    }


def _proxy_env(opts: InjectOptions, kept: Iterable[str] = ()) -> list[dict[str, str]]:
    """The proxy variables of an app container; ``kept``: its own NO_PROXY entries."""
    proxy = f"http://127.0.0.1:{opts.proxy_port}"
    no_proxy = ",".join(dict.fromkeys((*DEFAULT_NO_PROXY, *opts.no_proxy, *kept)))
    return [
        {"name": "HTTP_PROXY", "value": proxy},
        {"name": "http_proxy", "value": proxy},
        {"name": "NO_PROXY", "value": no_proxy},
        {"name": "no_proxy", "value": no_proxy},
    ]


def _replace_named(items: list[Any], new: dict[str, Any], *, first: bool = False) -> list[Any]:
    """``items`` with the entry named like ``new`` replaced in place, or ``new`` added."""
    out = [new if isinstance(i, dict) and i.get("name") == new["name"] else i for i in items]
    if new not in out:
        out = [new, *out] if first else [*out, new]
    return out


class InjectError(ValueError):
    """A document that cannot be injected: invalid YAML or a workload of the wrong shape."""


def _shape_problem(obj: dict[str, Any]) -> str | None:
    """What makes a workload impossible to inject (a field of the wrong type), or None. Checked
    before anything is touched, so that bad input is an error naming the field, never a crash."""

    def kind_of(value: Any, want: type, path: str, *, required: bool = False) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, want):
            return f"{path} must be {'a mapping' if want is dict else 'a list'}"
        return None

    spec = obj.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    meta = template.get("metadata") if isinstance(template, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    checks: list[tuple[Any, type, str, bool]] = [
        (obj.get("metadata"), dict, "metadata", False),
        (spec, dict, "spec", True),
        (template, dict, "spec.template", True),
        (meta, dict, "spec.template.metadata", False),
        (pod, dict, "spec.template.spec", False),
    ]
    if isinstance(meta, dict):
        checks += [
            (meta.get("labels"), dict, "spec.template.metadata.labels", False),
            (meta.get("annotations"), dict, "spec.template.metadata.annotations", False),
        ]
    if isinstance(pod, dict):
        for key in ("containers", "initContainers", "volumes"):
            items = pod.get(key)
            checks.append((items, list, f"spec.template.spec.{key}", False))
            if isinstance(items, list):
                for n, item in enumerate(items):
                    path = f"spec.template.spec.{key}[{n}]"
                    checks.append((item, dict, path, True))
                    if key == "containers" and isinstance(item, dict):
                        env = item.get("env")
                        checks.append((env, list, f"{path}.env", False))
                        for m, entry in enumerate(env if isinstance(env, list) else []):
                            checks.append((entry, dict, f"{path}.env[{m}]", True))
    for value, want, path, required in checks:
        problem = kind_of(value, want, path, required=required)
        if problem:
            return problem
    return None


def inject_object(obj: dict[str, Any], opts: InjectOptions, where: str = "") -> dict[str, Any]:
    """A copy of one workload with the sidecar; anything else is returned unchanged."""
    if obj.get("kind") == "List" and isinstance(obj.get("items"), list):
        items = [
            inject_object(i, opts, f"{where}items[{n}]: ") if isinstance(i, dict) else i
            for n, i in enumerate(obj["items"])
        ]
        return {**obj, "items": items}
    if obj.get("kind") not in WORKLOAD_KINDS or not str(obj.get("apiVersion", "")).startswith(
        "apps/"
    ):
        return obj
    problem = _shape_problem(obj)
    if problem:
        name = (
            obj.get("metadata", {}).get("name", "?")
            if isinstance(obj.get("metadata"), dict)
            else "?"
        )
        raise InjectError(f"{where}{obj['kind']}/{name}: {problem}")
    template = (obj.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    if str(annotations.get(SKIP_ANNOTATION, "")).lower() == "false":
        return obj
    name = f"{obj['kind']}/{(obj.get('metadata') or {}).get('name', '?')}"
    out = copy.deepcopy(obj)
    labels = (template.get("metadata") or {}).get("labels") or {}
    service = None if isinstance(labels.get(opts.app_label), str) else _label_value(obj)
    meta = out["spec"]["template"].get("metadata") or {}
    meta["labels"] = {**(meta.get("labels") or {}), SIDECAR_LABEL: "true"}
    out["spec"]["template"]["metadata"] = meta
    pod = out["spec"]["template"].setdefault("spec", {})
    pod["initContainers"] = _replace_named(
        pod.get("initContainers") or [], sidecar_container(opts, service), first=True
    )
    volume = {"name": VOLUME_NAME, "configMap": {"name": opts.configmap}}
    pod["volumes"] = _replace_named(pod.get("volumes") or [], volume)
    for container in pod.get("containers") or []:
        env = container.get("env") or []
        # The app's own NO_PROXY entries are its intent (a database, an external API): kept.
        kept = [
            host.strip()
            for entry in env
            if entry.get("name") in _PROXY_ENV[2:] and isinstance(entry.get("value"), str)
            for host in entry["value"].split(",")
            if host.strip()
        ]
        wanted = {e["name"]: e for e in _proxy_env(opts, kept)}
        for entry in env:
            old, new = entry.get("value"), wanted.get(entry.get("name"), {}).get("value")
            if entry.get("name") in _PROXY_ENV[:2] and old not in (None, new):
                print(
                    f"lanes inject: WARNING: {where}{name} container {container.get('name')}: "
                    f"{entry['name']}={old} replaced by {new} (remove it, or opt out with "
                    f"the pod annotation {SKIP_ANNOTATION}: 'false')",
                    file=sys.stderr,
                )
        for entry in wanted.values():
            env = _replace_named(env, entry)
        container["env"] = env
    return out


def _label_value(obj: dict[str, Any]) -> str:
    """The workload's name as a service name (its pods have no app label): an RFC 1123 label,
    what ``lanes sidecar --service`` accepts."""
    name = str((obj.get("metadata") or {}).get("name") or "")
    return re.sub(r"[^a-z0-9-]+", "-", name.lower())[:63].strip("-") or "unnamed"


def _documents(text: str) -> Iterable[str]:
    """The stream's documents with their separators, so that joining them gives ``text``."""
    starts = [0, *(m.start() for m in _SEPARATOR.finditer(text) if m.start() > 0)]
    for begin, end in zip(starts, [*starts[1:], len(text)], strict=True):
        yield text[begin:end]


class _Dumper(yaml.SafeDumper):
    """No anchors and aliases: kubectl reads them, but people diffing the output should not."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def inject_stream(text: str, opts: InjectOptions) -> str:
    """Inject every workload of a multi-document YAML stream; other documents stay as they are."""
    out: list[str] = []
    for n, doc in enumerate(_documents(text)):
        head, body = "", doc
        if _SEPARATOR.match(doc):
            head, _, body = doc.partition("\n")
            head += "\n"
        try:
            obj = yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise InjectError(f"document {n + 1}: invalid YAML: {exc}") from None
        if not isinstance(obj, dict):
            out.append(doc)
            continue
        new = inject_object(obj, opts, f"document {n + 1}: ")
        out.append(doc if new == obj else head + _dump(new))
    return "".join(out)
