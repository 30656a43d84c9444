"""Atomic file replacement, shared by every command that writes a file something else watches.

A watcher (the sidecar's reload, Envoy's filesystem xDS, kubectl, a GitOps agent) must see the
old file or the new one, whole: write a temp file in the same directory (``os.replace`` is atomic
within a file system), fsync it, rename it over the target.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step.

    A symlink (a ConfigMap mount, a dotfiles link) is followed, not replaced, and an existing
    file keeps its mode. Newlines are written as given.
    """
    target = Path(os.path.realpath(path))
    try:
        mode: int | None = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
