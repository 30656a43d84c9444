"""Our sidecar vs real Envoy vs no proxy, side by side in one run, on the same routes.

Usage::

    .venv/bin/python bench/bench_proxy.py [--duration 5] [--repeats 3] [--json out.json]

The proxy under test is pinned to core 0 (``taskset -c 0``); wrk and the upstream to core 1.
Envoy 1.40 runs with ``--concurrency 1`` from ``lane_router.render_envoy`` (its lane Lua
filter included); the sidecar runs as ``lanes sidecar`` with every feature on (timeouts, limits,
metrics, passive health, hop counter). Both route ``Host: reviews`` + ``x-lane: feature-a`` to the
feature-a version. The upstream is a minimal uvloop + httptools server, so that it is not the
bottleneck. Cases: 1 connection (latency), 32 connections (throughput), and a 1 MB response body
at 4 connections. Figures are medians over ``--repeats`` interleaved runs:

* req/s, p50 and p99 from ``wrk --latency``;
* CPU us per request: the proxy's utime + stime (``/proc/<pid>/stat``) over the run / requests;
* private memory: ``Private_Clean + Private_Dirty`` of ``/proc/<pid>/smaps_rollup`` at the end.

wrk is a Debian package: the script runs ``apt-get install -y wrk`` when it is missing and it is
root, else it says how to install it. Other work on the machine makes figures noisy: repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

PROXY_CORE = "0"
LOAD_CORE = "1"
BIG = 1 << 20
CASES = (  # name, connections, path
    ("c1", 1, "/"),
    ("c32", 32, "/"),
    ("1MB", 4, "/big"),
)

# -- the upstream (a child process of this script) ------------------------------------------


def _serve_upstream(names: list[str]) -> None:
    """Canned responses on one port per name; prints the ports. Runs until SIGTERM."""
    import asyncio

    import httptools
    import uvloop

    big_body = b"b" * BIG

    def response(name: str, body: bytes) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
            b"x-served-by: %s\r\n\r\n%s" % (len(body), name.encode(), body)
        )

    class Upstream(asyncio.Protocol):
        def __init__(self, small: bytes, big: bytes) -> None:
            self.small, self.big = small, big
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_message_complete(self) -> None:
            self.transport.write(self.big if self.url.startswith(b"/big") else self.small)
            if not self.parser.should_keep_alive():
                self.transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ports = []
        for name in names:
            small = response(name, b'{"served":"%s"}' % name.encode())
            big = response(name, big_body)
            server = await loop.create_server(
                lambda s=small, b=big: Upstream(s, b), "127.0.0.1", 0, backlog=1024
            )
            ports.append(server.sockets[0].getsockname()[1])
        print(" ".join(map(str, ports)), flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    uvloop.run(main())


# -- measuring ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def private_mb(pid: int) -> float:
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _latency_us(text: str, pct: str) -> float:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        raise RuntimeError(f"no {pct}% in wrk output:\n{text}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(url: str, conns: int, duration: float, pid: int | None) -> dict[str, float]:
    cmd = [
        "taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s",
        "--latency", "-H", "Host: reviews", "-H", "x-lane: feature-a", url,
    ]  # fmt: skip
    before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    after = cpu_seconds(pid) if pid else 0.0
    m = re.search(r"(\d+) requests in", out)
    requests = int(m.group(1)) if m else 0
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_us": _latency_us(out, "50"),
        "p99_us": _latency_us(out, "99"),
        "cpu_us_per_req": (after - before) * 1e6 / requests if pid and requests else float("nan"),
        "errors": (int(bad.group(1)) if bad else 0) + (1 if sock_err else 0),
    }


# -- the runs ----------------------------------------------------------------------------------


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get install -y wrk) ...", file=sys.stderr)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"], check=False, stdout=subprocess.DEVNULL
        )
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: install it with `sudo apt-get install -y wrk` (Debian/Ubuntu)")


def start_sidecar(topo_path: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [
        "taskset", "-c", PROXY_CORE, sys.executable, "-m", "lane_router.cli", "sidecar",
        "-f", str(topo_path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
        "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log.open("wb"), cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    m = re.search(r"proxy=\S+:(\d+)", line)
    if not m:
        proc.kill()
        sys.exit(f"sidecar did not start: {line!r}\n{log.read_text()}")
    return proc, int(m.group(1))


def check(url: str, want: str) -> None:
    req = urllib.request.Request(url, headers={"Host": "reviews", "x-lane": "feature-a"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = resp.read()
    if want.encode() not in body:
        sys.exit(f"{url} did not route to {want}: {body[:200]!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians)")
    ap.add_argument("--json", type=Path, help="also write the raw and median figures here")
    ap.add_argument("--no-envoy", action="store_true", help="sidecar vs direct only")
    ap.add_argument("--upstream", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.upstream:
        _serve_upstream(args.upstream)
        return 0
    ensure_wrk()
    import yaml

    from lane_router import topology_from_dict

    work = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    procs: list[Any] = []
    try:
        up = subprocess.Popen(
            ["taskset", "-c", LOAD_CORE, sys.executable, __file__, "--upstream", "baseline",
             "feature-a"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        procs.append(up)
        assert up.stdout is not None
        base_port, fa_port = map(int, up.stdout.readline().split())
        topo = {
            "namespace": "shop",
            "lanes": {"feature-a": {}, "feature-b": {"fallback": "feature-a"},
                      "hotfix": {"strict": True}},
            "services": {
                "reviews": {"port": 9080, "versions": {
                    "baseline": [f"127.0.0.1:{base_port}"], "feature-a": [f"127.0.0.1:{fa_port}"]}},
                "ratings": {"port": 9080, "versions": {"baseline": [f"127.0.0.1:{base_port}"]}},
            },
        }  # fmt: skip
        topo_path = work / "lanes.yaml"
        topo_path.write_text(yaml.safe_dump(topo))
        sidecar, sc_port = start_sidecar(topo_path, work / "sidecar.log")
        procs.append(sidecar)
        targets: dict[str, tuple[str, int | None]] = {
            "direct": (f"http://127.0.0.1:{fa_port}", None),
            "sidecar": (f"http://127.0.0.1:{sc_port}", sidecar.pid),
        }
        envoy = None
        if not args.no_envoy:
            from envoyproc import start_envoy

            from lane_router import render_envoy

            boot = render_envoy(topology_from_dict(topo), listen="127.0.0.1:0", admin="127.0.0.1:0")
            envoy = start_envoy(boot, workdir=work, concurrency=1)
            subprocess.run(
                ["taskset", "-a", "-p", "-c", PROXY_CORE, str(envoy.pid)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            host, port = envoy.address()
            targets["envoy"] = (f"http://{host}:{port}", envoy.pid)
        for url, _ in targets.values():
            check(url + "/", "feature-a")
            run_wrk(url + "/", 8, 1, None)  # warm up: pools, JIT-less caches, page faults
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        order = list(targets)
        for rep in range(args.repeats):
            for case, conns, path in CASES:
                for name in order[rep % len(order) :] + order[: rep % len(order)]:
                    url, pid = targets[name]
                    res = run_wrk(url + path, conns, args.duration, pid)
                    runs.setdefault((name, case), []).append(res)
                    print(
                        f"round {rep + 1} {case:>4} {name:>7}: {res['rps']:>9.0f} req/s "
                        f"p50 {res['p50_us']:>7.0f} us",
                        file=sys.stderr,
                        flush=True,
                    )
        memory = {name: private_mb(pid) for name, (_, pid) in targets.items() if pid}
        med = {
            key: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for key, rs in runs.items()
        }
        report(med, runs, memory, targets, args)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "median": {f"{n}/{c}": v for (n, c), v in med.items()},
                        "private_mb": memory,
                        "runs": {f"{n}/{c}": v for (n, c), v in runs.items()},
                        "duration": args.duration,
                        "repeats": args.repeats,
                    },
                    indent=2,
                )
            )
        if envoy is not None:
            envoy.stop()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(
    med: dict[tuple[str, str], dict[str, float]],
    runs: dict[tuple[str, str], list[dict[str, float]]],
    memory: dict[str, float],
    targets: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    print(
        f"\nMedians of {args.repeats} interleaved {args.duration:g}-s runs; proxy on core "
        f"{PROXY_CORE}, wrk + upstream on core {LOAD_CORE}.\n"
    )
    print(
        "| proxy | req/s c32 | req/s c1 | p50 c1 | added p50 c1 | p99 c1 | p99 c32 | "
        "CPU us/req c32 | req/s 1MB | CPU us/req 1MB | private MB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    direct_p50 = med[("direct", "c1")]["p50_us"]
    for name in targets:
        c1, c32, big = med[(name, "c1")], med[(name, "c32")], med[(name, "1MB")]
        added = "-" if name == "direct" else f"+{c1['p50_us'] - direct_p50:.0f} us"
        cpu = "-" if name == "direct" else f"{c32['cpu_us_per_req']:.1f}"
        cpu_big = "-" if name == "direct" else f"{big['cpu_us_per_req']:.0f}"
        mem = f"{memory[name]:.1f}" if name in memory else "-"
        print(
            f"| {name} | {c32['rps']:,.0f} | {c1['rps']:,.0f} | {c1['p50_us']:.0f} us | {added} | "
            f"{c1['p99_us']:.0f} us | {c32['p99_us']:.0f} us | {cpu} | {big['rps']:,.0f} | "
            f"{cpu_big} | {mem} |"
        )
    errors = {f"{n}/{c}": v["errors"] for (n, c), v in med.items() if v["errors"]}
    if errors:
        print(f"\nerrors (non-2xx or socket errors, median): {errors}")
    if "envoy" in targets:
        rps_ratio = med[("sidecar", "c32")]["rps"] / med[("envoy", "c32")]["rps"]
        add_s = med[("sidecar", "c1")]["p50_us"] - direct_p50
        add_e = med[("envoy", "c1")]["p50_us"] - direct_p50
        cpu_ratio = (
            med[("envoy", "c32")]["cpu_us_per_req"] / med[("sidecar", "c32")]["cpu_us_per_req"]
        )
        print(
            "\nsidecar / Envoy (ratios of the medians): "
            f"req/s at c32 {rps_ratio:.2f}x (goal >= 1.6x); "
            f"added p50 at c1 {add_s / add_e:.2f}x (goal <= 0.7x); private memory "
            f"{memory['sidecar'] / memory['envoy']:.2f}x (goal <= 1x); 1 MB req/s "
            f"{med[('sidecar', '1MB')]['rps'] / med[('envoy', '1MB')]['rps']:.2f}x"
        )
        # Each round runs the targets back to back, so a round's ratio sees one load level.
        paired_rps = statistics.median(
            s["rps"] / e["rps"]
            for s, e in zip(runs[("sidecar", "c32")], runs[("envoy", "c32")], strict=True)
        )
        paired_p50 = statistics.median(
            (s["p50_us"] - d["p50_us"]) / (e["p50_us"] - d["p50_us"])
            for s, e, d in zip(
                runs[("sidecar", "c1")], runs[("envoy", "c1")], runs[("direct", "c1")], strict=True
            )
        )
        print(
            f"sidecar / Envoy (median of per-round ratios): req/s at c32 {paired_rps:.2f}x; "
            f"added p50 at c1 {paired_p50:.2f}x"
        )
        print(
            f"CPU per request at c32: Envoy uses {cpu_ratio:.2f}x the sidecar's, i.e. one core "
            f"serves {1e6 / med[('sidecar', 'c32')]['cpu_us_per_req']:,.0f} req/s through the "
            f"sidecar and {1e6 / med[('envoy', 'c32')]['cpu_us_per_req']:,.0f} through Envoy"
        )


if __name__ == "__main__":
    sys.exit(main())
