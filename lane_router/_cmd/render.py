"""``lanes render``: one data plane's generated config, as deterministic multi-document YAML."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
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
    edge = parser.add_argument_group(
        "edge (envoy, and istio with --gateway): the lane comes only from a signed lane token"
    )
    edge.add_argument(
        "--edge",
        action="store_true",
        help="strip client x-lane and baggage lane, set x-lane from a lane token that verifies",
    )
    edge.add_argument("--jwks", metavar="FILE", help="with --edge: the public keys (lanes token)")
    edge.add_argument(
        "--token-issuer", default="traffic-lanes", metavar="ISS", help="default: traffic-lanes"
    )
    edge.add_argument(
        "--token-audience", default="lanes-edge", metavar="AUD", help="default: lanes-edge"
    )
    edge.add_argument(
        "--gateway-selector",
        default="istio=ingressgateway",
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="istio: labels of the gateway pods (default: istio=ingressgateway)",
    )
    edge.add_argument(
        "--gateway-jwt",
        choices=("envoy-filter", "request-authentication"),
        default="envoy-filter",
        help="istio: verify with an EnvoyFilter (default: a bad token is baseline) or Istio's "
        "RequestAuthentication (Istio answers 401 to a bad token)",
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
    gateway_api_edge = args.format == "gateway-api" and args.edge
    if args.export_local or (
        not gateway_api_edge and (args.gateway or args.external_host or args.entry_service)
    ):
        raise ValueError(
            "--export-local, --gateway, --external-host, --entry-service: istio only "
            "(gateway-api: --gateway, --external-host and --entry-service with --edge)"
        )
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
        edge = _edge_input(args)
        if args.format == "envoy" and args.xds_dir:
            return _render_xds(args, topology, options, edge)
        objects = render(topology, args.format, **options)
        if edge is not None:
            objects = _add_edge(args, topology, objects, *edge)
        elif args.gateway:
            print(
                "lanes render: WARNING: the ingress routes by the client's x-lane and baggage: "
                "anyone can pick a lane; add --edge --jwks FILE (see lanes token)",
                file=sys.stderr,
            )
        text = dump_yaml(objects)
    except ValueError as exc:
        print(f"lanes render: {exc}", file=sys.stderr)
        return 2
    return _emit(args, text)


def _edge_input(args: argparse.Namespace) -> tuple[Any, str] | None:
    """(key set, JWKS text) for --edge, after checking the flags go together."""
    if not args.edge:
        if args.jwks:
            raise ValueError("--jwks needs --edge")
        return None
    if args.format == "gateway-api":
        if args.jwks:
            raise ValueError(
                "--jwks: Gateway API cannot verify a token; see docs/design.md (The edge)"
            )
        if not (args.gateway and args.external_host and args.entry_service):
            raise ValueError(
                "--edge with gateway-api needs --gateway, --external-host, "
                "--entry-service (the route bound to the ingress)"
            )
        return None, ""
    if not args.jwks:
        raise ValueError("--edge needs --jwks FILE (lanes token keygen writes one)")
    if args.format == "istio" and not args.gateway:
        raise ValueError("--edge with istio needs --gateway (the ingress is the edge)")
    from lane_router._token import load_jwks

    try:
        text = Path(args.jwks).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--jwks: {exc}") from None
    return load_jwks(text, source=args.jwks), text


def _add_edge(
    args: argparse.Namespace, topology: Any, objects: list[dict[str, Any]], keyset: Any, text: str
) -> list[dict[str, Any]]:
    import json

    if args.format == "gateway-api":
        from lane_router.render.gateway_api_edge import render_gateway_api_edge

        print(
            "lanes render: WARNING: Gateway API cannot verify a lane token: this edge removes "
            "every client lane (all edge traffic is baseline); put the sidecar --edge or the "
            "Envoy edge in front to let QA pick lanes",
            file=sys.stderr,
        )
        route = render_gateway_api_edge(
            topology,
            gateway=args.gateway,
            hosts=args.external_host,
            entry_service=args.entry_service,
        )
        return [*objects, route]
    jwks_json = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    if args.format == "envoy":
        from lane_router.render.envoy_edge import add_envoy_edge

        for bootstrap in objects:
            add_envoy_edge(
                bootstrap,
                topology,
                keyset,
                jwks_json,
                issuer=args.token_issuer,
                audience=args.token_audience,
            )
        return objects
    from lane_router.render.istio_edge import render_istio_edge

    selector: dict[str, str] = {}
    for item in args.gateway_selector.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--gateway-selector {args.gateway_selector!r}: use KEY=VALUE[,...]")
        selector[key.strip()] = value.strip()
    namespace = args.gateway.partition("/")[0]
    edge = render_istio_edge(
        topology,
        namespace=namespace,
        selector=selector,
        jwks_json=jwks_json,
        mode=args.gateway_jwt,
        issuer=args.token_issuer,
        audience=args.token_audience,
    )
    return [*edge, *objects]  # the edge is in place before the ingress routes use x-lane


def _render_xds(
    args: argparse.Namespace,
    topology: Any,
    options: dict[str, Any],
    edge: tuple[Any, str] | None = None,
) -> int:
    from lane_router.render import XdsError, dump_yaml, render_envoy_xds, write_envoy_xds

    xds = render_envoy_xds(topology, xds_dir=args.xds_dir, **options)
    if edge is not None:  # the edge filters live in the bootstrap's listener: a new JWKS
        # takes a restart of Envoy (routes and clusters still change live)
        _add_edge(args, topology, [xds.bootstrap], *edge)
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
