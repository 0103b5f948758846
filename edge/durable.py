"""Files that are whole after a kill or a power cut: written under a temporary name in the same folder,
synced, then renamed into place (and the folder synced, so the new name survives too)."""

from __future__ import annotations

import os
from pathlib import Path

TEMPORARY = ".tmp"  # the suffix of a file being written; one left by a kill is never a finished file


def write_durably(path: Path, data: bytes, sync_folder: bool = True) -> None:
    """Write ``data`` to ``path`` whole or not at all. ``sync_folder=False`` leaves the folder's sync to the
    caller (once for many files: ``fsync_folder``)."""
    temporary = path.with_name(path.name + TEMPORARY)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if sync_folder:
        fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
