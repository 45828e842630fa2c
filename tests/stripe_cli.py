"""Run the official Stripe CLI (`stripe trigger`, `fixtures`, `listen`, `logs tail`) against the emulator.

The CLI is the npm package `@stripe/cli`, pinned in `tools/package.json` and installed by `.ci/run`
(`npm install --prefix tools`). It is found, in this order, at `KUPLOY_STRIPE_CLI`, at
`tools/node_modules/.bin/stripe`, or as `stripe` on PATH; without it the tests that need it skip.

Each run is isolated from the user's machine and from the network:
- HOME and XDG_CONFIG_HOME point at a fresh temporary folder, so the CLI never reads or writes the
  user's `~/.config/stripe/config.toml`; the working directory is that folder too, because
  `stripe fixtures` rewrites a `.env` it finds in the working directory.
- Before its first request every `trigger`/`fixtures` run asks GitHub for the latest release
  (`version.CheckLatestVersion` in stripe-cli's pkg/version/version.go). There is no flag or variable
  to turn that off, so HTTPS_PROXY points at a closed local port: the check fails at once (the CLI
  ignores the failure) instead of waiting on a closed network. Go never proxies loopback addresses,
  and NO_PROXY says so too, so requests to the emulator go straight to it.
- STRIPE_CLI_TELEMETRY_OPTOUT=1, and no STRIPE_* variable of the caller is passed on: the key and
  the API base are only ever the ones given here (`--api-key`, `--api-base`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from node_tools import install_tools

ROOT = Path(__file__).resolve().parent.parent
PINNED_VERSION = "1.52.0"
INSTALL_HINT = (
    f"the Stripe CLI {PINNED_VERSION} is not installed: run `npm install --prefix tools --no-package-lock` "
    "(Node.js and npm needed; .ci/run does it), or set KUPLOY_STRIPE_CLI to a `stripe` binary"
)
CLOSED_PORT_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused


@dataclass(frozen=True, slots=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        """For assertion messages: what the CLI said, both streams."""
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def find_cli() -> str | None:
    """The path of the `stripe` executable to use, or None (then skip with INSTALL_HINT)."""
    if explicit := os.environ.get("KUPLOY_STRIPE_CLI"):
        return explicit if Path(explicit).is_file() else None
    local = ROOT / "tools" / "node_modules" / ".bin" / "stripe"
    if not local.is_file():
        install_tools()  # as .ci/run does, so the README's test command is the whole set-up
    if local.is_file() and shutil.which("node"):
        return str(local)
    return shutil.which("stripe")


def isolated_env(home: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CLI's environment: the caller's without its STRIPE_*, KUPLOY_* and proxy variables, HOME
    in `home`, the update check sent to a closed port; `env` adds variables."""
    full_env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(
            ("STRIPE_", "KUPLOY_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
        )
    }
    full_env.update(
        HOME=home,
        XDG_CONFIG_HOME=str(Path(home) / "config"),
        STRIPE_CLI_TELEMETRY_OPTOUT="1",
        HTTPS_PROXY=CLOSED_PORT_PROXY,
        HTTP_PROXY=CLOSED_PORT_PROXY,
        NO_PROXY="127.0.0.1,localhost,::1",
        NO_COLOR="1",
    )
    full_env.update(env or {})
    return full_env


def run(
    cli: str,
    args: list[str],
    *,
    api_base: str,
    api_key: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> CliResult:
    """`stripe ARGS --api-key KEY --api-base URL` in an isolated home; `env` adds variables
    (e.g. for `${.env:NAME}` in a fixture file). A run over `timeout` seconds raises TimeoutExpired."""
    with tempfile.TemporaryDirectory(prefix="kuploy-stripe-cli-") as home:
        done = subprocess.run(
            [cli, *args, "--api-key", api_key, "--api-base", api_base],
            cwd=home,
            env=isolated_env(home, env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    return CliResult(done.returncode, done.stdout, done.stderr)


def trigger(cli: str, event: str, *, api_base: str, api_key: str, timeout: float = 120.0) -> CliResult:
    """`stripe trigger EVENT`: runs the CLI's built-in fixture for that event."""
    return run(cli, ["trigger", event], api_base=api_base, api_key=api_key, timeout=timeout)


def fixtures(
    cli: str,
    path: Path,
    *,
    api_base: str,
    api_key: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> CliResult:
    """`stripe fixtures FILE`: runs a fixture file of ours (an absolute path: the CLI runs elsewhere)."""
    return run(
        cli, ["fixtures", str(path.resolve())], api_base=api_base, api_key=api_key, env=env, timeout=timeout
    )


@dataclass(frozen=True, slots=True)
class Listening:
    """A running `stripe listen` (or `stripe logs tail`): the signing secret its "Ready!" line printed
    (empty for `logs tail`), and its output so far."""

    secret: str
    home: Path

    def output(self) -> str:
        """For assertion messages: both streams so far."""
        return "\n".join(
            f"--- {name}\n{(self.home / name).read_text(errors='replace')}" for name in ("stdout", "stderr")
        )

    def wait_for_stdout(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of `pattern` in what it printed on stdout, once there is one (else fails)."""
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, (self.home / "stdout").read_text(errors="replace"))):
            assert time.monotonic() < deadline, f"{pattern!r} not printed in {timeout} s\n{self.output()}"
            time.sleep(0.1)
        return found


READY = re.compile(r"Ready! .*Your webhook signing secret is (whsec_\w+)")
TAIL_READY = re.compile(r"Ready! You're now waiting to receive API request logs")


@contextmanager
def listening(
    cli: str, args: list[str], *, api_base: str, api_key: str, ready_timeout: float = 120.0
) -> Iterator[Listening]:
    """`stripe listen ARGS` in the background, isolated as `run`; yields once its websocket is connected
    (the "Ready! ... Your webhook signing secret is whsec_..." line)."""
    with _in_background(cli, ["listen", *args], api_base=api_base, api_key=api_key) as (proc, folder):
        yield Listening(_wait_ready(proc, folder, ready_timeout, READY, "listen").group(1), folder)


@contextmanager
def tailing(
    cli: str, args: list[str], *, api_base: str, api_key: str, ready_timeout: float = 120.0
) -> Iterator[Listening]:
    """`stripe logs tail ARGS` in the background, as `listening`; yields once it is ready (its "Ready!
    You're now waiting to receive API request logs" line)."""
    with _in_background(cli, ["logs", "tail", *args], api_base=api_base, api_key=api_key) as (proc, folder):
        _wait_ready(proc, folder, ready_timeout, TAIL_READY, "logs tail")
        yield Listening("", folder)


@contextmanager
def _in_background(
    cli: str, args: list[str], *, api_base: str, api_key: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`stripe ARGS` running in an isolated home, its streams in files there (a full pipe would stall
    it). At exit its process group is killed: the npm package's `stripe` is a Node shim that runs the Go
    binary as a child, which a signal to the shim alone would leave running."""
    with tempfile.TemporaryDirectory(prefix="kuploy-stripe-listen-") as home:
        folder = Path(home)
        with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
            proc = subprocess.Popen(
                [cli, *args, "--api-key", api_key, "--api-base", api_base],
                cwd=home,
                env=isolated_env(home),
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        try:
            yield proc, folder
        finally:
            _kill_group(proc)


def _wait_ready(
    proc: subprocess.Popen[bytes], folder: Path, timeout: float, ready: re.Pattern[str], command: str
) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = ready.search((folder / "stderr").read_text(errors="replace"))
        if found:
            return found
        so_far = Listening("", folder)
        assert proc.poll() is None, f"stripe {command} exited {proc.returncode}\n{so_far.output()}"
        assert time.monotonic() < deadline, f"stripe {command} not ready in {timeout} s\n{so_far.output()}"
        time.sleep(0.1)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the CLI's process group (the Go CLI exits on it); SIGKILL to whatever is left of the
    group after 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        proc.poll()  # reap the shim, or the group never looks empty
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=15.0)
