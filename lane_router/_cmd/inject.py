"""``lanes inject``: print workload manifests with the lane-routing sidecar added."""

from __future__ import annotations

import argparse
import sys

__all__ = ["HELP", "add_arguments", "run"]

HELP = "add the lane-routing sidecar to Deployments, StatefulSets and DaemonSets (YAML in, out)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lane_router._inject import CONFIGMAP_NAME, DEFAULT_NO_PROXY, default_image

    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument(
        "-f",
        "--file",
        action="append",
        metavar="FILE",
        help="manifests (multi-document YAML or a List), repeatable; '-' or none: stdin",
    )
    parser.add_argument("--image", default=default_image(), help="the sidecar's image")
    parser.add_argument(
        "--configmap",
        default=CONFIGMAP_NAME,
        help="ConfigMap holding lanes.yaml (the controller's)",
    )
    parser.add_argument("--proxy-port", type=int, default=15001, help="proxy port on loopback")
    parser.add_argument("--admin-port", type=int, default=15000, help="admin/probe port")
    parser.add_argument(
        "--app-label",
        default="app",
        help="pod label naming the service (the controller's --app-label): the sidecar's "
        "--service; workloads whose pods lack it use their own name",
    )
    parser.add_argument(
        "--no-proxy",
        action="append",
        default=[],
        metavar="HOST",
        help=f"more NO_PROXY entries, repeatable (always: {','.join(DEFAULT_NO_PROXY)})",
    )


def run(args: argparse.Namespace) -> int:
    from lane_router._inject import InjectError, InjectOptions, inject_stream

    opts = InjectOptions(
        image=args.image,
        configmap=args.configmap,
        proxy_port=args.proxy_port,
        admin_port=args.admin_port,
        no_proxy=tuple(args.no_proxy),
        app_label=args.app_label,
    )
    out: list[str] = []
    for n, name in enumerate(args.file or ["-"]):
        label = "stdin" if name == "-" else name
        try:
            if name == "-":
                text = sys.stdin.read()
            else:
                with open(name, encoding="utf-8") as fh:
                    text = fh.read()
            if n and not text.startswith("---"):
                out.append("---\n")
            out.append(inject_stream(text, opts))
        except (OSError, UnicodeDecodeError, InjectError) as exc:
            # Nothing on stdout: half a stream piped into `kubectl apply` is worse than none.
            print(f"lanes inject: error: {label}: {exc}", file=sys.stderr)
            return 2
    sys.stdout.write("".join(out))
    return 0
