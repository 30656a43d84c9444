"""A ConfigMap volume laid out exactly as kubelet's AtomicWriter lays it out, and updated the
same way: the files of each version in a new ``..<timestamp>`` directory, ``..data`` pointing
at it (swapped by creating ``..data_tmp`` and renaming it over ``..data``: atomic), each key a
symlink ``<key> -> ..data/<key>`` made once, the old directory removed after the swap."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["write_configmap_volume"]


def write_configmap_volume(volume: Path, data: Mapping[str, str]) -> Path:
    """Publish ``data`` in ``volume``; returns the new timestamped directory."""
    volume.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    while (volume / stamp).exists():
        stamp += "0"
    new = volume / stamp
    new.mkdir()
    for key, text in data.items():
        (new / key).write_text(text, encoding="utf-8")
    current = volume / "..data"
    old = volume / os.readlink(current) if current.is_symlink() else None
    tmp = volume / "..data_tmp"
    tmp.symlink_to(stamp)
    os.rename(tmp, current)
    for key in data:
        link = volume / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")
    if old is not None:
        shutil.rmtree(old)
    return new
