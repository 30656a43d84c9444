"""Child processes of the harness: started, watched and stopped by their PID, never by name.

Every child writes its output to a log file (a full pipe would stall it); the tail goes into
the error when it fails to become ready, which is what a user needs to see.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

__all__ = ["Child", "free_port", "live_children", "reserve_port", "start_child", "wait_until"]

# Every child started and not yet seen to exit: a safety net for tests cut short by a timeout.
_LIVE: set[Child] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that was free a moment ago (for commands that need one up front)."""
    with reserve_port(host) as sock:
        return int(sock.getsockname()[1])


def reserve_port(host: str = "127.0.0.1") -> socket.socket:
    """A bound, not listening, socket: its port is not handed out to anyone binding port 0
    (our own apps included) until it is closed, just before the command that needs it starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


class Child:
    """A process this harness started. ``stop()`` signals exactly this PID."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def send(self, signum: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    async def wait(self, timeout: float) -> int | None:
        """The exit code, or ``None`` if it is still running after ``timeout`` seconds."""
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            return None
        _LIVE.discard(self)
        return code

    async def stop(self, *, timeout: float = 5.0, signum: int = signal.SIGTERM) -> int | None:
        """Ask politely, then SIGKILL the same PID. Returns the exit code."""
        if self.running:
            self.send(signum)
            if await self.wait(timeout) is None:
                self.send(signal.SIGKILL)
                await self.wait(timeout)
        if self.process.stdin is not None:
            self.process.stdin.close()
        return self.process.returncode

    def forget_if_exited(self) -> None:
        if self.process.returncode is not None:
            _LIVE.discard(self)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def start_child(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    env: dict[str, str] | None = None,
    stdin: bool = False,
    stdout: bool = False,
) -> Child:
    """Start ``argv``; stderr (and stdout unless piped) go to ``log``."""
    with open(log, "ab") as out:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if stdout else out,
                stderr=out,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C reaches us; we stop the children
            )
        except OSError as exc:
            raise RuntimeError(f"cannot start {name} ({argv[0]}): {exc.strerror or exc}") from None
    child = Child(name, process, log)
    _LIVE.add(child)
    return child


def live_children() -> list[Child]:
    """Children started by this process that have not been seen to exit."""
    for child in list(_LIVE):
        child.forget_if_exited()
    return sorted(_LIVE, key=lambda c: c.pid)


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    what: str,
    timeout: float = 15.0,
    child: Child | None = None,
    interval: float = 0.02,
) -> None:
    """Poll ``check`` until true; fail early if ``child`` exits, with its log tail."""
    deadline = time.monotonic() + timeout
    while True:
        if child is not None and not child.running:
            raise RuntimeError(
                f"{child.name} (pid {child.pid}) exited with {child.process.returncode} "
                f"before {what}:\n{child.log_tail()}"
            )
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            if await check():
                return
        if time.monotonic() > deadline:
            tail = f":\n{child.log_tail()}" if child is not None else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        await asyncio.sleep(interval)
