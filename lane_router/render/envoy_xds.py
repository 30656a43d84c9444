"""Envoy with its routes and clusters in files it watches (filesystem xDS): change a running
Envoy's routing (a canary step, promote, abort, a new lane) without a restart.

Envoy cannot reload a static bootstrap in place. In this mode the bootstrap holds only the
listener (with the Lua lane filter) and points Envoy at two files in one directory: ``rds.json``
(the route configuration, RDS) and ``cds.json`` (the clusters, CDS). Envoy reloads a file when
it is replaced by a rename, and applies new routes to new requests without touching a connection.

A step must never route to a cluster Envoy does not have yet, nor remove a cluster a route still
names (both answer 503 ``NC``). :func:`write_envoy_xds` therefore makes before it breaks: the
clusters of the new and the old config first, then the new routes, then only the new clusters;
with the admin address it waits for Envoy to report each file's version before the next. The
header name and baggage key live in the bootstrap's Lua filter: changing them needs a restart.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lane_router._files import write_atomically
from lane_router._topology import Topology
from lane_router.render.envoy import (
    LISTENER_NAME,
    ROUTE_CONFIG_NAME,
    bootstrap_shell,
    clusters,
    route_config,
    service_names,
)

__all__ = ["CDS_FILE", "RDS_FILE", "EnvoyXds", "XdsError", "render_envoy_xds", "write_envoy_xds"]

CDS_FILE = "cds.json"
RDS_FILE = "rds.json"
_CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# Envoy's statistics of each file's subscription: ``version_text`` is the last version it
# accepted, ``update_rejected``/``update_failure`` count files it refused or could not read.
_CDS_STATS = "cluster_manager.cds"
_RDS_STATS = f"http.{LISTENER_NAME}.rds.{ROUTE_CONFIG_NAME}"
_POLL = 0.01


class XdsError(RuntimeError):
    """Envoy did not apply a written file in time (it rejected it, or it is not running)."""


@dataclass(frozen=True, slots=True)
class EnvoyXds:
    """A bootstrap that reads its routes and clusters from files, and those files' contents."""

    bootstrap: dict[str, Any]
    clusters: tuple[dict[str, Any], ...]
    route_config: dict[str, Any]


def _path_source(path: Path) -> dict[str, Any]:
    return {"path_config_source": {"path": str(path)}, "resource_api_version": "V3"}


def render_envoy_xds(
    topology: Topology,
    *,
    xds_dir: str | Path,
    listen: str = "127.0.0.1:15001",
    admin: str | None = "127.0.0.1:15000",
    connect_timeout: float = 1.0,
    health_check_interval: float | None = None,
    node_id: str = "traffic-lanes",
    services: Iterable[str] | None = None,
) -> EnvoyXds:
    """What :func:`render_envoy` renders, split into a bootstrap that watches ``xds_dir`` and the
    routes and clusters to write there with :func:`write_envoy_xds` (same options)."""
    directory = Path(xds_dir).absolute()
    names = service_names(topology, services)
    rds = {
        "route_config_name": ROUTE_CONFIG_NAME,
        "config_source": _path_source(directory / RDS_FILE),
    }
    bootstrap = bootstrap_shell(
        topology, listen=listen, admin=admin, node_id=node_id, routing={"rds": rds}
    )
    bootstrap["dynamic_resources"] = {"cds_config": _path_source(directory / CDS_FILE)}
    return EnvoyXds(
        bootstrap=bootstrap,
        clusters=tuple(
            clusters(
                topology,
                names,
                connect_timeout=connect_timeout,
                health_check_interval=health_check_interval,
            )
        ),
        route_config=route_config(topology, names),
    )


def _response(type_url: str, resources: Iterable[dict[str, Any]]) -> tuple[str, str]:
    """A DiscoveryResponse document and its version (a digest of the resources)."""
    items = [{"@type": type_url, **r} for r in resources]
    digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]
    return json.dumps({"version_info": digest, "resources": items}, indent=1) + "\n", digest


def _current_clusters(path: Path) -> list[dict[str, Any]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    out = []
    for item in doc.get("resources", []) if isinstance(doc, dict) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            out.append({k: v for k, v in item.items() if k != "@type"})
    return out


def _file_version(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("version_info")
    except (OSError, ValueError, AttributeError):
        return None


def _subscription(admin_url: str, prefix: str) -> tuple[object, int]:
    """(version Envoy runs, files refused so far) of one subscription; XdsError if unreachable."""
    pattern = prefix.replace(".", "[.]")
    url = f"{admin_url.rstrip('/')}/stats?format=json&filter=^{pattern}[.]"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            stats = {i.get("name"): i.get("value") for i in json.loads(resp.read())["stats"]}
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
        raise XdsError(f"cannot read Envoy's stats at {admin_url}: {exc}") from None
    refused = sum(
        v
        for k in ("update_rejected", "update_failure")
        if isinstance(v := stats.get(f"{prefix}.{k}"), int)
    )
    return stats.get(f"{prefix}.version_text"), refused


def _wait_for(admin_url: str, prefix: str, version: str, refused: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen, now_refused = _subscription(admin_url, prefix)
        if seen == version:
            return
        if now_refused > refused:
            raise XdsError(
                f"Envoy at {admin_url} refused version {version} ({prefix}); see its log"
            )
        if time.monotonic() > deadline:
            raise XdsError(
                f"Envoy at {admin_url} did not apply version {version} within {timeout}s "
                f"({prefix}.version_text is {seen!r})"
            )
        time.sleep(_POLL)


def write_envoy_xds(
    xds: EnvoyXds,
    xds_dir: str | Path,
    *,
    admin_url: str | None = None,
    timeout: float = 10.0,
) -> None:
    """Write ``xds``'s routes and clusters to ``xds_dir`` so that no request fails meanwhile.

    Order: the new clusters plus the old ones (so both the old and the new routes resolve), the
    new routes, then the new clusters alone. With ``admin_url`` (``http://127.0.0.1:15000``) each
    step waits until Envoy reports that version; when Envoy refuses a file (or does not take it
    within ``timeout`` seconds) the file's previous content is put back, so the directory keeps
    matching what Envoy runs, and XdsError says why. Without ``admin_url`` the files are only
    written in that order, and Envoy may read them in another, in which case a request can meet
    a cluster it does not have yet during the milliseconds between. The first write (an empty
    directory) creates the files Envoy needs before it starts.
    """
    directory = Path(xds_dir)
    directory.mkdir(parents=True, exist_ok=True)
    cds_path, rds_path = directory / CDS_FILE, directory / RDS_FILE

    first = not (cds_path.exists() and rds_path.exists())  # no Envoy can be reading them yet

    def step(path: Path, text: str, version: str, stats: str) -> None:
        if _file_version(path) == version:
            return
        if admin_url is None or first:
            write_atomically(path, text)
            return
        previous = path.read_text(encoding="utf-8")
        refused = _subscription(admin_url, stats)[1]
        write_atomically(path, text)
        try:
            _wait_for(admin_url, stats, version, refused, timeout)
        except XdsError:
            write_atomically(path, previous)
            raise

    new = list(xds.clusters)
    new_names = {c["name"] for c in new}
    old_only = sorted(
        (c for c in _current_clusters(cds_path) if c["name"] not in new_names),
        key=lambda c: c["name"],
    )
    if old_only:
        step(cds_path, *_response(_CLUSTER_TYPE, [*new, *old_only]), _CDS_STATS)
    else:
        step(cds_path, *_response(_CLUSTER_TYPE, new), _CDS_STATS)
    step(rds_path, *_response(_ROUTE_TYPE, [xds.route_config]), _RDS_STATS)
    if old_only:
        step(cds_path, *_response(_CLUSTER_TYPE, new), _CDS_STATS)
