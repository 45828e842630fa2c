"""Which files a catalog path names, and their text: a file or the catalog files directly in a folder;
FIFOs, devices, broken links, files over 10 MiB, binary and non-UTF-8 content refused, never opened
or parsed. The text goes on to `yaml_source` or `json_source`; more than `MAX_PLANS` plans are
refused there, before the schema check.
"""

from __future__ import annotations

import errno
import stat
from pathlib import Path

from reconciler import errors
from reconciler.catalog.problems import Doc, printable

MAX_FILE_BYTES = 10 * 1024 * 1024
"""Files larger than this are refused before parsing."""

MAX_PLANS = 10_000
"""Most plans a catalog (a file, or all the files of a folder) may hold. More is refused as soon as
it is seen, while parsing and before the schema check: validating 100,000 plans took two minutes and
a gigabyte, and no billing catalog has that many."""

CATALOG_SUFFIXES = (".yaml", ".yml", ".json")


def _not_a_file(path: Path) -> str:
    """Why `path` (not a regular file, not a folder) cannot be read, without opening it: opening a
    FIFO blocks, and a device such as /dev/zero never ends."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "cannot read: a symlink loop (too many levels of symbolic links)"
        if e.errno == errno.ENOENT:
            return "cannot read: a broken symlink (its target does not exist)"
        return f"cannot read: {e.strerror or e}"
    if stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    else:
        kind = "not a file"
    return f"not a regular file ({kind}); refusing to read it as a catalog"


def catalog_files(path: Path) -> list[Path]:
    """The catalog files `path` names, sorted, or CatalogError."""
    shown = printable(str(path))
    if path.is_dir():
        files: list[Path] = []
        problems: list[str] = []
        for p in sorted(path.iterdir(), key=lambda p: p.name):
            if p.suffix.lower() not in CATALOG_SUFFIXES or p.is_dir():
                continue  # only files directly in the folder; a folder named x.yaml is not one
            if p.is_file():
                files.append(p)
            else:  # never skipped silently: its plans would be missing, so apply would archive them
                problems.append(f"{printable(str(p))}: {_not_a_file(p)}")
        if problems:
            raise errors.CatalogError(problems)
        if not files:
            raise errors.CatalogError(
                [f"{shown}: no catalog files (*.yaml, *.yml, *.json) directly in this folder"]
            )
        return files
    if not path.exists() and not path.is_symlink():
        raise errors.CatalogError([f"{shown}: no such file or folder"])
    if not path.is_file():
        raise errors.CatalogError([f"{shown}: {_not_a_file(path)}"])
    if path.suffix.lower() not in CATALOG_SUFFIXES:
        raise errors.CatalogError([f"{shown}: not a catalog file: expected a .yaml, .yml or .json file"])
    return [path]


def read_text(path: Path, file: str) -> str:
    """The file as text, or CatalogError for something that cannot be a catalog."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise errors.CatalogError([f"{file}: cannot read: {e.strerror or e}"]) from e
    if len(data) > MAX_FILE_BYTES:
        raise errors.CatalogError([f"{file}: larger than 10 MiB; refusing to parse it as a catalog"])
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise errors.CatalogError(
            [f"{file}:{line}: binary content (a NUL byte), not a YAML or JSON catalog in UTF-8"]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise errors.CatalogError(
            [f"{file}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})"]
        ) from e
    return text.removeprefix("\ufeff")


def too_many_plans(where: str, what: str) -> errors.CatalogError:
    return errors.CatalogError(
        [f"{where}: {what}; a catalog holds at most {MAX_PLANS} plans (refused before checking them)"]
    )


def plan_count(doc: Doc) -> int:
    plans = doc.data.get("plans") if isinstance(doc.data, dict) else None
    return len(plans) if isinstance(plans, list) else 0
