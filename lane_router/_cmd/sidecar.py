"""``lanes sidecar``: run the lane-routing proxy for one topology file."""

from __future__ import annotations

import argparse
import sys

__all__ = ["HELP", "add_arguments", "run"]

HELP = "run the lane-routing sidecar proxy (HTTP/1.1) with an admin port"


def _hostport(text: str) -> tuple[str, int]:
    from lane_router._sidecar._config import parse_hostport

    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _service_name(text: str) -> str:
    import re

    if text == "":  # `--service $(LANES_SERVICE)` in a pod without the label: warned in run()
        return text
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a service name (an RFC 1123 label)")
    return text


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("-f", "--file", required=True, help="the topology (lanes.yaml)")
    parser.add_argument(
        "--listen",
        action="append",
        type=_hostport,
        metavar="HOST:PORT",
        help="proxy address, repeatable; [::1]:15001 for IPv6; port 0 picks a free port "
        "(the bound addresses are printed in the 'ready' line and in /readyz); "
        "127.0.0.1:15001 when not given",
    )
    parser.add_argument(
        "--admin",
        type=_hostport,
        default="127.0.0.1:15000",
        metavar="HOST:PORT",
        help="admin address: /healthz /readyz /metrics /routes",
    )
    parser.add_argument(
        "--service",
        type=_service_name,
        metavar="NAME",
        help="a per-pod sidecar: the service whose calls it carries, the `source` label of its "
        "request metrics (the call graph of `lanes ui`)",
    )
    parser.add_argument("--no-admin", action="store_true", help="do not start the admin server")
    parser.add_argument(
        "--admin-server",
        choices=("builtin", "aiohttp"),
        default="builtin",
        help="admin HTTP server: the sidecar's own (~10 MB less memory) or aiohttp",
    )
    t = parser.add_argument_group("timeouts (seconds, 0 = none)")
    for flag, default, what in (
        ("--connect-timeout", 5.0, "to connect to an upstream (504)"),
        ("--idle-timeout", 60.0, "no bytes either way during an exchange (504)"),
        ("--request-timeout", 300.0, "a whole exchange, request head to last byte (504)"),
        ("--header-timeout", 10.0, "to receive a request head once it began (slowloris, 408)"),
        ("--keepalive-timeout", 75.0, "an idle client connection is closed after this"),
        ("--drain-timeout", 30.0, "on SIGTERM, how long in-flight requests may take"),
    ):
        t.add_argument(flag, type=float, default=default, metavar="S", help=what)
    lim = parser.add_argument_group("limits")
    for flag, default, what in (
        ("--max-header-bytes", 65536, "request head size (and trailers size); 431 above"),
        ("--max-headers", 100, "header lines in a request head (or its trailers); 431 above"),
        ("--max-connections", 10000, "client connections; over it: 503 and close"),
        ("--max-hops", 16, "508 when the hop counter reaches this (a routing loop)"),
    ):
        lim.add_argument(flag, type=int, default=default, metavar="N", help=what)
    lim.add_argument("--hops-header", default="x-lanes-hops", help="the hop counter header")
    lim.add_argument(
        "--eject-time",
        type=float,
        default=5.0,
        metavar="S",
        help="first ejection of an endpoint that refuses or resets; doubles per failure",
    )
    lim.add_argument("--eject-max", type=float, default=60.0, metavar="S", help="longest ejection")
    dns = parser.add_argument_group("endpoints given by DNS name (resolved off the request path)")
    dns.add_argument(
        "--dns-ttl", type=float, default=5.0, metavar="S", help="how long an answer is used"
    )
    dns.add_argument(
        "--dns-negative-ttl",
        type=float,
        default=1.0,
        metavar="S",
        help="after a failed lookup (NXDOMAIN, refused: a dead endpoint), when to ask again",
    )
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="how often to check the file for changes (0: only on SIGHUP)",
    )
    edge = parser.add_argument_group(
        "edge (a public listener: the lane comes only from a signed lane token)"
    )
    edge.add_argument(
        "--edge",
        action="store_true",
        help="strip client x-lane and baggage lane; x-lane from a lane token that verifies",
    )
    edge.add_argument(
        "--jwks", metavar="FILE", help="with --edge: public keys (reloaded with the topology)"
    )
    edge.add_argument("--token-issuer", default="traffic-lanes", metavar="ISS")
    edge.add_argument("--token-audience", default="lanes-edge", metavar="AUD")
    edge.add_argument(
        "--token-leeway", type=float, default=60.0, metavar="S", help="clock skew for exp/nbf"
    )
    edge.add_argument(
        "--token-verify-budget",
        type=_count,
        default=200,
        metavar="N",
        help="signature checks per second for unseen tokens; past it a token counts as absent"
        " (0: unlimited)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error"), help="logs"
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from lane_router._sidecar import SidecarConfig
    from lane_router._sidecar import run as run_sidecar

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s lanes-sidecar %(levelname)s %(message)s",
    )
    if args.edge != bool(args.jwks):
        print("lanes sidecar: --edge and --jwks FILE go together", file=sys.stderr)
        return 2
    if args.service == "":
        print(
            "lanes sidecar: WARNING: --service is empty (the pod has no app label for "
            "$(LANES_SERVICE)): its calls are counted with no source; label the pods, or re-run "
            "`lanes inject`, which then names the workload",
            file=sys.stderr,
        )
    config = SidecarConfig(
        topology_path=args.file,
        listen=tuple(args.listen or [("127.0.0.1", 15001)]),
        admin=None if args.no_admin else args.admin,
        admin_server=args.admin_server,
        service=args.service or None,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout,
        request_timeout=args.request_timeout,
        header_timeout=args.header_timeout,
        keepalive_timeout=args.keepalive_timeout,
        drain_timeout=args.drain_timeout,
        max_header_bytes=args.max_header_bytes,
        max_headers=args.max_headers,
        max_connections=args.max_connections,
        max_hops=args.max_hops,
        hops_header=args.hops_header,
        eject_base=args.eject_time,
        eject_max=args.eject_max,
        reload_interval=args.reload_interval,
        edge_jwks=args.jwks if args.edge else None,
        edge_issuer=args.token_issuer,
        edge_audience=args.token_audience,
        edge_leeway=args.token_leeway,
        edge_verify_budget=args.token_verify_budget,
        dns_ttl=args.dns_ttl,
        dns_negative_ttl=args.dns_negative_ttl,
    )
    return run_sidecar(config)
