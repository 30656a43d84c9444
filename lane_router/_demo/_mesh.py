"""A whole mesh on loopback: version apps in worker processes, one data plane, a QA client.

The topology given to the data plane is built from the apps' real ports and written as an
ordinary ``lanes.yaml`` in a temporary directory; every expectation comes from that same
topology through ``_predict``. Everything started is stopped by its PID in ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from multidict import CIMultiDict

from lane_router._demo._planes import Plane, hostport, start_plane
from lane_router._demo._predict import CallGraph, Hop, entry_lane, hops_of, predict_path
from lane_router._demo._proc import Child, reserve_port, start_child
from lane_router._document import topology_to_dict
from lane_router._files import write_atomically
from lane_router._topology import Endpoint, Lane, Service, Topology
from lanes_sdk.wire import DEFAULT_BASELINE

__all__ = ["Blueprint", "Mesh", "Observed", "Version"]

Version = tuple[str, str]  # (service, lane)


@dataclass(frozen=True, kw_only=True)
class Blueprint:
    """The shape of a mesh: lanes, which lanes deploy which service, and who calls whom.

    ``deploys`` maps a service to the lanes with a version of it (the baseline is implied).
    ``calls`` maps a service to stages of downstream services (each stage is a fan-out).
    """

    lanes: Sequence[Lane]
    deploys: Mapping[str, Sequence[str]]
    calls: CallGraph
    entry: str
    baseline: str = DEFAULT_BASELINE
    service_port: int = 9080

    @property
    def versions(self) -> list[Version]:
        out: list[Version] = []
        for service in sorted(self.deploys):
            lanes = {self.baseline, *self.deploys[service]}
            out.extend((service, lane) for lane in sorted(lanes))
        return out

    def topology(
        self,
        endpoints: Mapping[Version, Endpoint] | None = None,
        *,
        lanes: Sequence[Lane] | None = None,
        exclude: Collection[Version] = (),
    ) -> Topology:
        """The topology of this shape; without ``endpoints`` (before anything runs) every
        version gets a placeholder endpoint, enough to ask the routing core questions."""
        eps = endpoints or {v: Endpoint("127.0.0.1", 9) for v in self.versions}
        services = []
        for service in sorted(self.deploys):
            versions = {
                lane: (ep,)
                for (s, lane), ep in eps.items()
                if s == service and (s, lane) not in exclude
            }
            services.append(Service(service, versions, port=self.service_port))
        return Topology.build(
            lanes=self.lanes if lanes is None else lanes, services=services, baseline=self.baseline
        )


@dataclass(frozen=True)
class Observed:
    """One request as the QA client saw it."""

    status: int
    hops: list[Hop]
    body: Any


@dataclass(eq=False)
class Mesh:
    """A running mesh: build it with :meth:`start`, always end it with :meth:`stop`.

    ``endpoints`` and ``workers`` map each version to its address and its process; ``planes``
    are the data planes started for it (the first one carries the apps' calls).
    """

    blueprint: Blueprint
    workdir: Path
    session: aiohttp.ClientSession
    endpoints: dict[Version, Endpoint] = field(default_factory=dict)
    workers: dict[Version, Child] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    planes: list[Plane] = field(default_factory=list)
    callers: dict[str, Plane] = field(default_factory=dict)  # service -> its own sidecar
    topology: Topology | None = None
    _own_workdir: bool = False
    _env: dict[str, str] = field(default_factory=dict)
    _spec: dict[str, Any] = field(default_factory=dict)
    _slow: dict[Version, float] = field(default_factory=dict)
    _callers: dict[str, str] = field(default_factory=dict)  # service -> its sidecar's address

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        blueprint: Blueprint,
        *,
        plane: str = "sidecar",
        mode: str = "host",
        host: str = "127.0.0.1",
        workers: int = 1,
        isolate: Collection[Version] = (),
        hidden: Collection[Version] = (),
        slow: Mapping[Version, float] | None = None,
        tracing: bool = True,
        workdir: Path | None = None,
        callers: bool = False,
    ) -> Mesh:
        """Start workers, write ``lanes.yaml`` (without ``hidden`` versions), start the plane.

        ``mode`` is how apps address the data plane (``Downstream``: host, fqdn or proxy).
        ``workers`` spreads the versions over that many processes; each ``isolate`` version gets
        a process of its own, so it can be killed alone. ``tracing`` gives the apps a real
        OpenTelemetry SDK tracer provider (spans recorded, no exporter). ``slow`` gives some
        versions a fixed latency in milliseconds. ``host`` is the loopback address of every
        app and of the data plane (``::1`` runs the whole mesh over IPv6). With ``callers``
        (sidecar plane only), each service that calls others reaches them through a sidecar of
        its own started with ``--service NAME``, as a per-pod sidecar would (``callers``), so
        the request metrics say who called (their ``source`` label); QA's requests still enter
        through the first plane.
        """
        if callers and plane != "sidecar":
            raise ValueError("callers=True needs the sidecar data plane (--service)")
        own = workdir is None
        wd = Path(tempfile.mkdtemp(prefix="lanes-demo-")) if workdir is None else workdir
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        _uninstrument(session)
        mesh = cls(blueprint, wd, session, _own_workdir=own)
        try:
            reserved = reserve_port(host)
            listen_port = int(reserved.getsockname()[1])
            caller_socks = {s: reserve_port(host) for s in blueprint.calls} if callers else {}
            caller_ports = {s: int(k.getsockname()[1]) for s, k in caller_socks.items()}
            try:
                await mesh._start_workers(
                    hostport(host, listen_port),
                    {s: hostport(host, p) for s, p in caller_ports.items()},
                    host=host,
                    mode=mode,
                    workers=workers,
                    isolate=isolate,
                    slow=slow or {},
                    tracing=tracing,
                )
                mesh.topology = mesh.build_topology(exclude=hidden)
                mesh.write_topology(mesh.topology)
            finally:
                reserved.close()
                for sock in caller_socks.values():
                    sock.close()
            mesh.planes.append(
                await start_plane(
                    plane,
                    topology=mesh.topology,
                    lanes_yaml=mesh.lanes_yaml,
                    workdir=wd,
                    session=session,
                    listen_port=listen_port,
                    host=host,
                )
            )
            for service, port in caller_ports.items():
                caller = await start_plane(
                    "sidecar",
                    topology=mesh.topology,
                    lanes_yaml=mesh.lanes_yaml,
                    workdir=wd,
                    session=session,
                    listen_port=port,
                    host=host,
                    name=f"sidecar-{service}",
                    service=service,
                )
                mesh.planes.append(caller)
                mesh.callers[service] = caller
        except BaseException:
            await mesh.stop()
            raise
        return mesh

    async def _start_workers(
        self,
        dataplane: str,
        caller_planes: Mapping[str, str],
        *,
        host: str,
        mode: str,
        workers: int,
        isolate: Collection[Version],
        slow: Mapping[Version, float],
        tracing: bool,
    ) -> None:
        bp = self.blueprint
        shared = [v for v in bp.versions if v not in isolate]
        groups: list[list[Version]] = [shared[i :: max(workers, 1)] for i in range(max(workers, 1))]
        groups = [g for g in groups if g] + [[v] for v in bp.versions if v in isolate]
        # The apps run on instrument()'s defaults whatever the caller's shell says about OTel.
        env = {k: v for k, v in os.environ.items() if k != "OTEL_PROPAGATORS"}
        env.setdefault("OTEL_TRACES_EXPORTER", "none")
        env.setdefault("OTEL_METRICS_EXPORTER", "none")
        env.setdefault("OTEL_LOGS_EXPORTER", "none")
        self._env = env
        self._spec = {
            "dataplane": dataplane,
            "host": host,
            "mode": mode,
            "namespace": "default",
            "port": bp.service_port,
            "tracing": tracing,
        }
        self._slow = dict(slow)
        self._callers = dict(caller_planes)
        started = [await self._spawn(group) for group in groups]
        for child in started:
            await self._read_ports(child)

    async def _spawn(
        self, group: Sequence[Version], ports: Mapping[Version, int] | None = None
    ) -> Child:
        bp = self.blueprint
        ports = ports or {}
        name = f"worker-{len(self.children)}"
        child = await start_child(
            name,
            [sys.executable, "-m", "lane_router._demo._worker"],
            log=self.workdir / f"{name}.log",
            env=self._env,
            stdin=True,
            stdout=True,
        )
        self.children.append(child)
        versions = [
            {
                "service": s,
                "version": lane,
                "calls": [list(x) for x in bp.calls.get(s, ())],
                "latency_ms": self._slow.get((s, lane), 0.0),
                "listen_port": ports.get((s, lane), 0),
                "dataplane": self._callers.get(s, self._spec["dataplane"]),
            }
            for s, lane in group
        ]
        assert child.process.stdin is not None
        child.process.stdin.write(json.dumps({**self._spec, "versions": versions}).encode() + b"\n")
        return child

    async def _read_ports(self, child: Child) -> None:
        assert child.process.stdout is not None
        try:
            line = await asyncio.wait_for(child.process.stdout.readline(), 20)
        except TimeoutError:
            line = b""
        if not line:
            await child.wait(1)
            raise RuntimeError(f"{child.name} did not start:\n{child.log_tail()}")
        host = self._spec["host"]
        for service, lane, port in json.loads(line)["ports"]:
            self.endpoints[(service, lane)] = Endpoint(str(host), int(port))
            self.workers[(service, lane)] = child

    async def restart(self, version: Version) -> Child:
        """Start ``version`` again on its old port, in a new process (a redeploy after a
        crash); the topology does not change."""
        child = await self._spawn([version], {version: self.endpoints[version].port})
        await self._read_ports(child)
        return child

    async def stop(self) -> None:
        """Stop the data planes, then the workers, each by its PID; remove the temp dir."""
        for plane in self.planes:
            await plane.stop()
        await asyncio.gather(*(c.stop() for c in self.children))
        await self.session.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- topology ------------------------------------------------------------------------

    @property
    def lanes_yaml(self) -> Path:
        return self.workdir / "lanes.yaml"

    @property
    def plane(self) -> Plane:
        return self.planes[0]

    def build_topology(
        self, *, lanes: Sequence[Lane] | None = None, exclude: Collection[Version] = ()
    ) -> Topology:
        """The topology of the running apps (their real ports), minus ``exclude``."""
        return self.blueprint.topology(self.endpoints, lanes=lanes, exclude=exclude)

    def write_topology(self, topology: Topology) -> None:
        """Replace ``lanes.yaml`` atomically (a reader never sees half a file)."""
        text = "# generated by lane_router._demo for the apps running now\n" + yaml.safe_dump(
            topology_to_dict(topology), sort_keys=False
        )
        write_atomically(self.lanes_yaml, text)

    # -- traffic -------------------------------------------------------------------------

    def predict(
        self,
        headers: Mapping[str, str],
        *,
        down: Collection[Version] = (),
        topology: Topology | None = None,
    ) -> list[Hop]:
        topo = topology or self.topology
        assert topo is not None
        return predict_path(
            topo, self.blueprint.calls, self.blueprint.entry, entry_lane(topo, headers), down=down
        )

    async def ask(
        self,
        headers: Mapping[str, str],
        *,
        delay_ms: float | None = None,
        plane: Plane | None = None,
        service: str | None = None,
        method: str = "GET",
        body: bytes | None = None,
    ) -> Observed:
        """One QA request at ``service`` (default: the entry), through ``plane`` (default: the
        mesh's data plane)."""
        target = plane or self.plane
        entry = service or self.blueprint.entry
        params = {"delay": str(delay_ms)} if delay_ms else None
        sent = CIMultiDict(headers)  # keeps repeated field lines (two baggage headers)
        sent["Host"] = entry
        async with self.session.request(
            method, f"http://{target.address}/", headers=sent, params=params, data=body
        ) as resp:
            raw = await resp.read()
            status = resp.status
        try:
            payload: Any = json.loads(raw)
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        return Observed(status, hops_of(payload, service=entry, status=status), payload)

    async def inflight(self, version: Version) -> int:
        """Requests the app of ``version`` is handling now (asked directly, not via the plane)."""
        ep = self.endpoints[version]
        async with self.session.get(f"http://{ep}/_stats") as resp:
            return int((await resp.json())["inflight"])


def _uninstrument(session: aiohttp.ClientSession) -> None:
    """The QA client must send exactly the headers it is given, even in an instrumented process."""
    with contextlib.suppress(ImportError):
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

        AioHttpClientInstrumentor.uninstrument_session(session)
