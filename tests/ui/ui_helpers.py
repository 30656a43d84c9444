"""Real parts for the UI tests: upstream apps, a sidecar, Prometheus, the UI and Chromium.

Every process is started here and stopped by its PID. A tool that is missing (Debian's
``prometheus``/``chromium``, or the ``playwright`` package) fails the test in CI and skips it
elsewhere, with the command that installs it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

DEADLINE = 20.0
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("LANES_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "ui"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing(what: str, fix: str) -> None:
    """Fail in CI, skip elsewhere, saying what is missing and how to get it."""
    msg = f"{what} not found: {fix}"
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI must install it: .ci/apt-packages.txt, pyproject.toml)")
    pytest.skip(msg)


def need_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(name, f"apt-get install {package} (or: make system-deps, as root)")
    assert path is not None
    return path


def need_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    missing("chromium", "apt-get install chromium (or: make system-deps, as root)")
    raise AssertionError("unreachable")


def wait_for(cond: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Loop:
    """An asyncio loop on a daemon thread: the upstream apps and the UI run there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = DEADLINE) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def start_app(name: str, *, status: int = 200) -> tuple[web.AppRunner, str]:
    """A version of a service: answers ``status`` with its name."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"version": name}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"127.0.0.1:{runner.addresses[0][1]}"


class Proc:
    """A child process with its log file; :meth:`stop` ends it by PID (SIGTERM, then KILL)."""

    def __init__(self, argv: list[str], log: Path, **kw: Any) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(argv, stderr=self._out, **kw)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._out.close()


def start_sidecar(
    workdir: Path, topology: Mapping[str, Any], *args: str, name: str = "sidecar"
) -> tuple[Proc, str, str]:
    """``lanes sidecar`` on ephemeral ports; returns (process, proxy address, admin address)."""
    path = workdir / "lanes.yaml"
    path.write_text(yaml.safe_dump(dict(topology)))
    argv = [sys.executable, "-m", "lane_router.cli", "sidecar", "-f", str(path)]
    argv += ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", *args]
    proc = Proc(argv, workdir / f"{name}.log", stdout=subprocess.PIPE)
    assert proc.proc.stdout is not None
    box: dict[str, bytes] = {}
    reader = threading.Thread(
        target=lambda: box.setdefault("line", proc.proc.stdout.readline()),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    reader.join(DEADLINE)
    line = box.get("line", b"").decode()
    if "ready" not in line:
        proc.stop()
        raise AssertionError(f"sidecar did not start: {line!r}\n{proc.logs()}")
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    return proc, fields["proxy"].split(",")[0], fields["admin"]


def start_prometheus(
    workdir: Path,
    targets: list[str],
    *,
    interval: str = "1s",
    rule_groups: list[dict[str, Any]] | None = None,
) -> tuple[Proc, str]:
    """Debian's Prometheus scraping ``targets`` (sidecar admin addresses) and evaluating
    ``rule_groups`` every ``interval``; returns (process, base URL) once it answers ready."""
    binary = need_binary("prometheus", "prometheus")
    port = free_port()
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": "lanes-sidecar", "static_configs": [{"targets": targets}]}],
    }
    if rule_groups:
        # The group's own interval (30s in the cluster) yields to the test's.
        groups = [{k: v for k, v in g.items() if k != "interval"} for g in rule_groups]
        (workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
        config["rule_files"] = [str(workdir / "rules.yaml")]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    argv = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    proc = Proc(argv, workdir / "prometheus.log", stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{proc.logs()}")
        try:
            return get(f"{url}/-/ready")[0] == 200
        except OSError:
            return False

    try:
        wait_for(ready, "prometheus to be ready")
    except BaseException:
        proc.stop()
        raise
    return proc, url


def get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    host, _, path = url.removeprefix("http://").partition("/")
    conn = http.client.HTTPConnection(host, timeout=DEADLINE)
    try:
        conn.request("GET", "/" + path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, (url, status, body[:300])
    return json.loads(body)


def send(proxy: str, service: str, n: int, headers: Mapping[str, str] | None = None) -> list[int]:
    """``n`` requests to ``service`` through the sidecar on one keep-alive connection."""
    conn = http.client.HTTPConnection(proxy, timeout=DEADLINE)
    codes = []
    try:
        for _ in range(n):
            conn.request("GET", "/", headers={"Host": service, **(headers or {})})
            resp = conn.getresponse()
            resp.read()
            codes.append(resp.status)
    finally:
        conn.close()
    return codes
