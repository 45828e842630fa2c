"""The Node tools some tests run, pinned in `tools/package.json`.

`.ci/run` installs them (INSTALL); on a developer machine the first test that needs one does the
same, so the README's test command is the whole set-up. Without node and npm, those tests skip and
say so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
INSTALL = [
    "install",
    "--prefix",
    str(TOOLS),
    "--no-package-lock",
    "--no-audit",
    "--no-fund",
    "--loglevel=error",
]


def install_tools() -> bool:
    """Install `tools/package.json` as .ci/run does; False when node or npm is not installed."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return False
    result = subprocess.run(
        [npm, *INSTALL],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"npm {' '.join(INSTALL)} failed:\n{result.stdout}{result.stderr}"
    return True


def node_package(name: str) -> Path:
    """`tools/node_modules/<name>`, installed as .ci/run installs it if it is not there yet."""
    installed = TOOLS / "node_modules" / name
    if installed.is_dir():
        return installed
    if not install_tools():
        pytest.skip(f"node and npm are not installed: the pinned npm package {name!r} cannot run")
    assert installed.is_dir(), f"{name} is not in tools/package.json"
    return installed


def node() -> str:
    found = shutil.which("node")
    assert found is not None  # node_package() skipped otherwise
    return found
