"""The sidecar on a ConfigMap volume: kubelet swaps ``..data`` to a new directory (an atomic
rename); the sidecar reloads even when the new file has the same size and mtime as the old."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from kubelet_volume import write_configmap_volume
from sidecar_helpers import Upstream, http_get, wait_for


def _topology(endpoint: str) -> str:
    doc = {"services": {"reviews": {"port": 9080, "versions": {"baseline": [endpoint]}}}}
    return yaml.safe_dump(doc)


def test_reload_on_kubelet_data_swap(tmp_path: Path, upstreams: Callable[..., Upstream]) -> None:
    one, two = upstreams("one"), upstreams("two")
    a, b = _topology(one.endpoint), _topology(two.endpoint)
    a, b = a.ljust(max(len(a), len(b))), b.ljust(max(len(a), len(b)))  # same size
    volume = tmp_path / "volume"
    first = write_configmap_volume(volume, {"lanes.yaml": a})
    stamp = os.stat(first / "lanes.yaml").st_mtime_ns
    cmd = [
        sys.executable, "-m", "lane_router.cli", "sidecar", "-f", str(volume / "lanes.yaml"),
        "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--reload-interval", "0.05",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        fields = dict(p.split("=", 1) for p in line.split() if "=" in p)
        proxy = fields["proxy"].rsplit(":", 1)
        admin = fields["admin"].rsplit(":", 1)
        proxy_addr, admin_addr = (proxy[0], int(proxy[1])), (admin[0], int(admin[1]))

        def served() -> str:
            status, _, body = http_get(proxy_addr, "/", host="reviews")
            assert status == 200
            return str(json.loads(body)["served"])

        def generation() -> int:
            return int(json.loads(http_get(admin_addr, "/readyz")[2])["generation"])

        assert served() == "one" and generation() == 1
        second = write_configmap_volume(volume, {"lanes.yaml": b})
        os.utime(second / "lanes.yaml", ns=(stamp, stamp))  # what mtime alone cannot see
        wait_for(lambda: generation() == 2, "the reload after the ..data swap")
        assert served() == "two"
        assert {p.name for p in volume.iterdir()} == {"..data", second.name, "lanes.yaml"}
    finally:
        proc.terminate()
        proc.wait(10)
