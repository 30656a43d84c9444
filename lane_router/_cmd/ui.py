"""``lanes ui``: serve the lane map, call graph and canary pages on live figures."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["HELP", "add_arguments", "run"]

HELP = "serve the lane map, call graph per lane and canary pages on live figures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-f", "--file", help="the topology (lanes.yaml)")
    where.add_argument(
        "--kube",
        action="store_true",
        help="the controller's view of --namespace instead of a file: its TrafficLanes (TTL "
        "expiry shown), TrafficCanaries, Deployments and Services, read as the controller "
        "reads them (needs the 'controller' extra and list rights on those)",
    )
    kube = parser.add_argument_group("with --kube (as for `lanes controller`)")
    kube.add_argument("--namespace", "-n", default="default", help="the namespace shown")
    kube.add_argument("--kubeconfig", default=None, help="default: in-cluster, else ~/.kube/config")
    kube.add_argument("--context", default=None, help="kubeconfig context")
    kube.add_argument("--app-label", default="app", help="pod label naming the service")
    kube.add_argument("--lane-label", default="lane", help="pod label naming the lane")
    kube.add_argument("--baseline", default=None, help="baseline lane name (default baseline)")
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="where the UI listens (port 0 picks one; the address is printed)",
    )
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--sidecar",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a sidecar admin address to scrape /metrics from, repeatable "
        "(the default when no --prometheus: 127.0.0.1:15000)",
    )
    src.add_argument(
        "--prometheus",
        metavar="URL",
        help="a Prometheus server's base URL, e.g. http://prometheus:9090",
    )
    parser.add_argument(
        "--window",
        default="1m",
        help="rate window (PromQL duration with --prometheus; seconds of "
        "history kept when scraping sidecars)",
    )
    parser.add_argument(
        "--refresh", type=float, default=5.0, metavar="S", help="seconds between page refreshes"
    )
    parser.add_argument(
        "--tracing-url",
        metavar="TEMPLATE",
        help="link to a lane's spans in a tracing UI; {lane} and {service} are "
        "filled in, e.g. 'http://jaeger:16686/search?service={service}"
        "&tags=%%7B%%22lane%%22%%3A%%22{lane}%%22%%7D'",
    )


def _seconds(window: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in sorted(units, key=len, reverse=True):
        if window.endswith(unit) and window[: -len(unit)].replace(".", "", 1).isdigit():
            return float(window[: -len(unit)]) * units[unit]
    return float(window)


def _model_view(args: argparse.Namespace) -> Any:
    """The controller's view of ``--namespace`` (``None`` after saying why it cannot be had)."""
    import sys

    try:
        from lane_router._cmd.controller import api_client
        from lane_router._controller._controller import read_model
        from lane_router._controller._kube import Kube
    except ModuleNotFoundError:
        print(
            "lanes ui: --kube needs the Kubernetes client; install the 'controller' extra: "
            "pip install 'traffic-lanes[controller]'",
            file=sys.stderr,
        )
        return None
    from lane_router.ui import ModelView
    from lanes_sdk.wire import DEFAULT_BASELINE, baggage_key_from_env, header_from_env

    try:
        api = api_client(args.kubeconfig, args.context)
    except Exception as exc:
        print(f"lanes ui: no usable Kubernetes configuration: {exc}", file=sys.stderr)
        return None
    api.user_agent = "traffic-lanes-ui"
    kube, ns = Kube(api, request_timeout=10), args.namespace
    header, baggage_key = header_from_env(), baggage_key_from_env()
    baseline = args.baseline or DEFAULT_BASELINE

    def read() -> Any:
        return read_model(
            kube,
            ns,
            baseline=baseline,
            header=header,
            baggage_key=baggage_key,
            app_label=args.app_label,
            lane_label=args.lane_label,
        )

    return ModelView(read, where=f"namespace {ns}", min_age=min(2.0, args.refresh / 2))


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys
    from pathlib import Path

    from lane_router import TopologyError, load_topology
    from lane_router._address import split_hostport
    from lane_router.ui import PrometheusSource, ScrapeSource, UiConfig, run_forever

    try:
        if args.file:
            load_topology(args.file)
        host, port = split_hostport(args.listen, port_zero=True)
        window = _seconds(args.window)
    except (TopologyError, OSError, ValueError) as exc:
        print(f"lanes ui: {exc}", file=sys.stderr)
        return 2
    if args.refresh <= 0 or window <= 0:
        print("lanes ui: --refresh and --window must be positive", file=sys.stderr)
        return 2
    source: PrometheusSource | ScrapeSource
    if args.prometheus:
        source = PrometheusSource(args.prometheus, window=args.window)
    else:
        source = ScrapeSource(args.sidecar or ["127.0.0.1:15000"], window=window)
    topology: Any = Path(args.file) if args.file else _model_view(args)
    if topology is None:
        return 2
    config = UiConfig(topology, source, refresh=args.refresh, tracing=args.tracing_url)
    try:
        asyncio.run(run_forever(config, host, port))
    except KeyboardInterrupt:
        return 130
    return 0
