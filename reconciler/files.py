"""Files written for the user (`plan --out`, `export --out`): whole, or not at all.

The text goes to a temporary file beside the target, renamed over it once complete, so a reader
never sees half a file and a failure leaves the target as it was. A target whose mode is read-only
is left alone (also for root, who could write it): someone marked it so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from reconciler.errors import KuployError


def write_atomically(path: Path, text: str, *, what: str) -> None:
    """Write `text` to `path`; raises `KuployError` naming `what`, the path and the reason."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "it is a folder")
        if path.exists() and not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(errno.EACCES, "the file is read-only")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise KuployError(f"cannot write {what} to {path}: {e.strerror or e}; nothing was written") from e


def make_writable_folder(path: Path, *, what: str, fix: str) -> None:
    """Create the folder `path` if needed and check a file can be made in it; raises `KuployError`
    naming `what`, the path, the reason and `fix` before anything is started there."""
    probe = path / f".write-check.{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise KuployError(f"cannot use {path} as {what}: {e.strerror or e}; {fix}") from e
