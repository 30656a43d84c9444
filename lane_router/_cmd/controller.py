"""``lanes controller``: run the Kubernetes controller (in-cluster, or from a kubeconfig)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

__all__ = ["HELP", "add_arguments", "api_client", "run"]

HELP = (
    "run the Kubernetes controller: TrafficLanes and Deployment labels in, Istio routes "
    "(or, --data-plane sidecar, per-lane Services and a lanes.yaml ConfigMap) out"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        "-n",
        default=None,
        help="watch and write only this namespace; objects get exportTo ['.'] "
        "(default: every namespace)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (default: in-cluster, else ~/.kube/config)",
    )
    parser.add_argument("--context", default=None, help="kubeconfig context")
    parser.add_argument(
        "--metrics",
        default="127.0.0.1:9090",
        metavar="HOST:PORT",
        help="serve /healthz and /metrics here (':9090' for every address, "
        "'off' to disable; default %(default)s)",
    )
    parser.add_argument(
        "--identity", default=None, help="leader election identity (default: host name and pid)"
    )
    parser.add_argument(
        "--lease-namespace",
        default=None,
        help="namespace of the leader election Lease (default: POD_NAMESPACE, "
        "--namespace or 'default')",
    )
    parser.add_argument("--lease-name", default="traffic-lanes-controller")
    parser.add_argument("--lease-duration", type=int, default=15, metavar="SECONDS")
    parser.add_argument(
        "--no-leader-election",
        action="store_true",
        help="act as the only replica (never run two like this)",
    )
    parser.add_argument(
        "--data-plane",
        choices=("istio", "sidecar"),
        default="istio",
        help="istio: a VirtualService and a DestinationRule per Service; sidecar: a Service per "
        "(service, lane) and per namespace a ConfigMap of lanes.yaml for `lanes sidecar` "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--configmap",
        default="traffic-lanes",
        help="sidecar data plane: the ConfigMap's name (what `lanes inject --configmap` mounts)",
    )
    parser.add_argument("--app-label", default="app", help="pod label naming the service")
    parser.add_argument("--lane-label", default="lane", help="pod label naming the lane")
    parser.add_argument("--baseline", default=None, help="baseline lane name (default baseline)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every write")


def _split(addr: str) -> tuple[str, int]:
    from lane_router._address import split_hostport

    try:
        return split_hostport(addr, port_zero=True)
    except ValueError as exc:
        raise ValueError(f"--metrics {exc}") from None


def api_client(kubeconfig: str | None, context: str | None) -> Any:
    """A Kubernetes ``ApiClient``: from ``kubeconfig``/``context`` when given, else in-cluster,
    else ~/.kube/config (also ``lanes ui --kube``'s). Raises what the client raises."""
    from kubernetes import client, config

    if kubeconfig or context:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg)
    return client.ApiClient(cfg)


def run(args: argparse.Namespace) -> int:
    try:
        import kubernetes  # noqa: F401
    except ModuleNotFoundError:
        print(
            "lanes controller: the Kubernetes client is not installed; install the "
            "'controller' extra: pip install 'traffic-lanes[controller]'",
            file=sys.stderr,
        )
        return 2
    from lane_router._controller._controller import Controller, ControllerOptions
    from lane_router._controller._kube import Kube
    from lane_router._controller._metrics import Metrics, MetricsServer
    from lanes_sdk.wire import DEFAULT_BASELINE, baggage_key_from_env, header_from_env

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        api = api_client(args.kubeconfig, args.context)
    except Exception as exc:
        print(f"lanes controller: no usable Kubernetes configuration: {exc}", file=sys.stderr)
        return 2
    identity = args.identity or f"{socket.gethostname()}-{os.getpid()}"
    api.user_agent = f"traffic-lanes-controller ({identity})"
    options = ControllerOptions(
        identity=identity,
        namespace=args.namespace,
        leader_election=not args.no_leader_election,
        lease_namespace=args.lease_namespace
        or os.environ.get("POD_NAMESPACE")
        or args.namespace
        or "default",
        lease_name=args.lease_name,
        lease_seconds=args.lease_duration,
        renew_seconds=max(1.0, args.lease_duration / 3),
        baseline=args.baseline or DEFAULT_BASELINE,
        header=header_from_env(),
        baggage_key=baggage_key_from_env(),
        app_label=args.app_label,
        lane_label=args.lane_label,
        data_plane=args.data_plane,
        configmap_name=args.configmap,
    )
    metrics = Metrics()
    controller = Controller(Kube(api), options, metrics=metrics)
    server = None
    if args.metrics != "off":
        try:
            host, port = _split(args.metrics)
            server = MetricsServer(host, port, metrics, controller.healthy)
        except (OSError, ValueError) as exc:
            print(f"lanes controller: --metrics: {exc}", file=sys.stderr)
            return 2
        server.start()
        print(
            f"lanes controller: /healthz and /metrics on {host or '*'}:{server.port}",
            file=sys.stderr,
            flush=True,
        )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    controller.start()
    print(f"lanes controller: started as {identity}", file=sys.stderr, flush=True)
    done.wait()
    controller.stop()
    if server is not None:
        server.stop()
    api.close()
    return 0
