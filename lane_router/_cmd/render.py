"""``lanes render``: one data plane's generated config, as deterministic multi-document YAML."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lane_router._files import write_atomically

__all__ = ["HELP", "add_arguments", "run"]

HELP = "print the generated Istio, Envoy or Gateway API config for a topology"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", required=True, metavar="FILE", help="the lanes.yaml")
    parser.add_argument(
        "--format",
        choices=("istio", "envoy", "gateway-api"),
        default="istio",
        help="data plane to render (default: istio)",
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write here (atomically) instead of stdout"
    )
    k8s = parser.add_argument_group("istio and gateway-api")
    k8s.add_argument(
        "--lane-label",
        default="lane",
        metavar="KEY",
        help="pod label holding the lane (default: lane; pods also carry app: <service>)",
    )
    istio = parser.add_argument_group("istio")
    istio.add_argument(
        "--export-local",
        action="store_true",
        help='exportTo ["."]: keep every object visible to its own namespace only',
    )
    istio.add_argument(
        "--gateway",
        metavar="NS/NAME",
        help="ingress gateway: also render a VirtualService bound to it for --entry-service",
    )
    istio.add_argument(
        "--external-host",
        action="append",
        default=[],
        metavar="HOST",
        help="host QA calls at the ingress gateway (repeatable)",
    )
    istio.add_argument(
        "--entry-service", metavar="SERVICE", help="the service the external hosts reach"
    )
    envoy = parser.add_argument_group("envoy")
    envoy.add_argument(
        "--listen", default="127.0.0.1:15001", metavar="HOST:PORT", help="outbound listener"
    )
    envoy.add_argument(
        "--admin",
        default="127.0.0.1:15000",
        metavar="HOST:PORT",
        help="Envoy admin address, or 'none' (default: 127.0.0.1:15000)",
    )
    envoy.add_argument(
        "--xds-dir",
        metavar="DIR",
        help="filesystem xDS: print a bootstrap that reads routes and clusters from DIR and "
        "write them there, in an order that fails no request; run again to change a live Envoy",
    )
    envoy.add_argument(
        "--envoy-admin",
        metavar="URL",
        help="with --xds-dir: wait until the running Envoy at URL (http://127.0.0.1:15000) has "
        "taken each file; a refused file is put back and the command exits 1",
    )


def _options(args: argparse.Namespace) -> dict[str, Any]:
    if args.format != "envoy" and (args.xds_dir or args.envoy_admin):
        raise ValueError("--xds-dir, --envoy-admin: envoy only")
    if args.format == "istio":
        return {
            "lane_label": args.lane_label,
            "export_local": args.export_local,
            "gateway": args.gateway,
            "external_hosts": tuple(args.external_host),
            "entry_service": args.entry_service,
        }
    if args.gateway or args.external_host or args.entry_service or args.export_local:
        raise ValueError("--export-local, --gateway, --external-host, --entry-service: istio only")
    if args.format == "gateway-api":
        return {"lane_label": args.lane_label}
    if args.envoy_admin and not args.xds_dir:
        raise ValueError("--envoy-admin needs --xds-dir")
    admin = None if args.admin.lower() == "none" else args.admin
    return {"listen": args.listen, "admin": admin}


def run(args: argparse.Namespace) -> int:
    from lane_router import TopologyError, load_topology
    from lane_router.render import dump_yaml, render

    try:
        topology = load_topology(args.file)
    except TopologyError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        options = _options(args)
        if args.format == "envoy" and args.xds_dir:
            return _render_xds(args, topology, options)
        text = dump_yaml(render(topology, args.format, **options))
    except ValueError as exc:
        print(f"lanes render: {exc}", file=sys.stderr)
        return 2
    return _emit(args, text)


def _render_xds(args: argparse.Namespace, topology: Any, options: dict[str, Any]) -> int:
    from lane_router.render import XdsError, dump_yaml, render_envoy_xds, write_envoy_xds

    xds = render_envoy_xds(topology, xds_dir=args.xds_dir, **options)
    try:
        write_envoy_xds(xds, args.xds_dir, admin_url=args.envoy_admin)
    except (XdsError, OSError) as exc:
        print(f"lanes render: {exc}", file=sys.stderr)
        return 1
    return _emit(args, dump_yaml([xds.bootstrap]))


def _emit(args: argparse.Namespace, text: str) -> int:
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    try:
        write_atomically(args.output, text)
    except OSError as exc:
        print(f"lanes render: cannot write {args.output}: {exc}", file=sys.stderr)
        return 1
    return 0
