"""Dockerfile.example: build its virtual environment the way its COPY and RUN steps do, and
start it the way its ENTRYPOINT and CMD would, without a Docker engine.

The test reads the Dockerfile and runs the build stage's instructions in order, as they are
written, with the repository root as the build context (``docker build -f
Dockerfile.example .``). Four things differ from a real build:

- COPY writes into a folder under tmp_path that stands for the image's /, and the image
  paths that RUN steps name (the virtual environment, and the COPY destination that pip
  installs from) become folders under tmp_path;
- ``python`` on PATH is the interpreter running the tests, not the base image's;
- a BuildKit secret mount's target (``/run/secrets/ID``) becomes a path under tmp_path that
  does not exist, which is a build without that secret;
- COPY skips ``__pycache__`` folders. The wheel pip builds leaves them out anyway, and
  other processes may rewrite them in the working tree while the test copies it.

The copy also keeps pip's build/ and .egg-info folders out of the working tree. pip
resolves the dependencies (PyYAML and the backend libraries of the extras) from the
configured package index, as the real build does; --no-deps or --system-site-packages would
skip exactly the part of the install that the extras decide. The build arguments are those
that examples/compose/compose.yaml passes, so the test builds the image that compose would
run. The copied sources are then deleted, as the runtime stage copies only the virtual
environment, and the resulting ``secret-init`` starts the sample application on a real tmpfs
with the compose example's manifest and its fake values.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from namespaces import in_tmpfs_namespace, require_mount_namespace

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile.example"
COMPOSE = ROOT / "examples" / "compose"
PIP_TIMEOUT_SECONDS = 600

# Environment variable or argument names that hold a secret, and values that look like one.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|"
                         r"CREDENTIAL", re.IGNORECASE)
# secret-init's own settings (SECRET_INIT_*) name the tool, not a secret.
ALLOWED_NAME = re.compile(r"^SECRET_INIT_", re.IGNORECASE)
SECRET_VALUE = re.compile(
    r"AKIA[0-9A-Z]{16}"             # AWS access key id
    r"|\bhv[sb]\.[A-Za-z0-9_-]{20,}"  # Vault token
    r"|-----BEGIN [A-Z ]*PRIVATE KEY"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"  # GitHub token
    r"|://[^/\s:@]+:[^/\s@]+@"        # a URL with user:password
    r"|AGE-SECRET-KEY-1")


@dataclass
class Instruction:
    keyword: str
    arguments: str
    stage: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, joining continuation lines and dropping comments."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        # Docker drops comment lines and empty lines, also inside a continued instruction.
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical = pending + stripped
        pending = ""
        keyword, _, arguments = logical.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, arguments.strip(), stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def key_values(arguments: str) -> dict[str, str]:
    """Parse the NAME=VALUE pairs of an ENV or ARG instruction (an ARG may have no value)."""
    pairs = {}
    for item in shlex.split(arguments):
        name, _, value = item.partition("=")
        pairs[name] = value
    return pairs


def secret_findings(text: str) -> list[str]:
    """Return the ENV and ARG settings of a Dockerfile that carry a secret-looking value."""
    findings = []
    for instruction in parse_dockerfile(text):
        if instruction.keyword not in ("ENV", "ARG"):
            continue
        for name, value in key_values(instruction.arguments).items():
            if value and SECRET_NAME.search(name) and not ALLOWED_NAME.match(name):
                findings.append(f"{instruction.keyword} {name} has a value")
            if SECRET_VALUE.search(value):
                findings.append(f"{instruction.keyword} {name} has a secret-looking value")
    return findings


def expand(text: str, variables: dict[str, str]) -> str:
    """Expand ${NAME} and $NAME as Docker does for ARG and ENV values."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                  lambda match: variables.get(match.group(1) or match.group(2), match.group(0)),
                  text)


def strip_run_flags(arguments: str) -> tuple[list[str], str]:
    """Split 'RUN --mount=... --network=... COMMAND' into (flags, shell command)."""
    flags = []
    rest = arguments
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.lstrip()
    return flags, rest


def secret_mount_targets(flags: list[str]) -> dict[str, str]:
    """Return id -> target of each --mount=type=secret flag (default target /run/secrets/ID)."""
    targets = {}
    for flag in flags:
        if not flag.startswith("--mount="):
            continue
        options = dict(item.partition("=")[::2] for item in flag[len("--mount="):].split(","))
        if options.get("type") == "secret":
            targets[options["id"]] = options.get("target") or options.get("dst") or \
                f"/run/secrets/{options['id']}"
    return targets


def run_copy(arguments: str, context: Path, image_root: Path) -> str:
    """Run a plain COPY instruction from ``context`` into ``image_root``, the image's /.

    Follow Docker's rules: a folder source copies its content into the destination, and a
    file goes into the destination folder when the destination ends in / or there are
    several sources. Return the destination, an image path.
    """
    flags, rest = strip_run_flags(arguments)
    assert not flags, f"COPY {arguments}: this test does not emulate COPY flags"
    *sources, destination = shlex.split(rest)
    assert sources, f"COPY {arguments} names no source"
    target = image_root / destination.lstrip("/")
    for source in sources:
        path = context / source
        assert path.exists(), f"COPY {arguments}: {source} is not in the build context"
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif destination.endswith("/") or len(sources) > 1:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return destination


def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def stages(instructions: list[Instruction]) -> int:
    return max(instruction.stage for instruction in instructions) + 1


def venv_path(instructions: list[Instruction]) -> str:
    for instruction in instructions:
        match = re.search(r"\bpython3? -m venv (\S+)", instruction.arguments)
        if instruction.keyword == "RUN" and match:
            return match.group(1)
    raise AssertionError("no 'python -m venv' step in the Dockerfile")


def json_form(instructions: list[Instruction], keyword: str) -> list[str]:
    (found,) = [instruction for instruction in instructions if instruction.keyword == keyword]
    return json.loads(found.arguments)


def build_copy_sources(instructions: list[Instruction]) -> list[str]:
    """Return the build-context paths that the build stage's COPY lines name."""
    sources = []
    for instruction in instructions:
        if instruction.keyword == "COPY" and instruction.stage == 0:
            _, rest = strip_run_flags(instruction.arguments)
            sources.extend(shlex.split(rest)[:-1])
    return sources


def pip_install_source(command: str) -> tuple[str, str] | None:
    """Return (image path, extras) of a ``pip install "/PATH[EXTRAS]"`` in ``command``."""
    if "pip install" not in command:
        return None
    match = re.search(r'pip install\b.*?"(/[^"\[\s]+)\[([^\]"]*)\]"', command, re.DOTALL)
    assert match, f'no quoted "/PATH[EXTRAS]" after pip install in: {command}'
    return match.group(1), match.group(2)


# -- static checks ----------------------------------------------------------------------------

def test_dockerfile_env_and_arg_carry_no_secret():
    assert secret_findings(DOCKERFILE.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("line", [
    "ENV DB_PASSWORD=hunter2",
    "ARG NPM_TOKEN=npm_0123456789abcdef",
    "ENV AWS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
    "ENV VAULT_ADDR=https://vault:8200 VAULT_TOKEN=hvs.CAESIJ0123456789abcdefghijkl",
    "ARG PIP_INDEX_URL=https://user:s3cret@pypi.example.com/simple",
])
def test_secret_check_flags_classic_mistake(line: str):
    assert secret_findings(f"FROM scratch\n{line}\n") != []


def test_secret_check_allows_secret_init_settings():
    assert secret_findings("FROM scratch\nENV SECRET_INIT_LOG_FORMAT=json\n"
                           "ARG SECRET_INIT_EXTRAS=vault\n") == []


def test_dockerfile_mentions_env_password_mistake_in_comment():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^#.*ENV DB_PASSWORD=", text, re.MULTILINE)


def test_dockerfile_build_secret_uses_buildkit_mount():
    runs = [instruction for instruction in dockerfile() if instruction.keyword == "RUN"]
    mounts = [secret_mount_targets(strip_run_flags(run.arguments)[0]) for run in runs]
    assert any(mounts), "no RUN --mount=type=secret step"
    pip_runs = [run for run in runs if "pip install" in run.arguments]
    assert pip_runs and all("--no-cache-dir" in run.arguments for run in pip_runs)


def test_dockerfile_copies_venv_between_stages():
    instructions = dockerfile()
    assert stages(instructions) >= 2
    venv = venv_path(instructions)
    copies = [instruction.arguments for instruction in instructions
              if instruction.keyword == "COPY" and instruction.arguments.startswith("--from=")]
    # The venv's scripts name their interpreter by absolute path, so the path must not change.
    assert f"--from=build {venv} {venv}" in copies
    final = stages(instructions) - 1
    assert not [instruction for instruction in instructions
                if instruction.stage == final and "pip install" in instruction.arguments]


def test_dockerfile_precompiles_bytecode():
    venv = venv_path(dockerfile())
    compile_steps = [instruction.arguments for instruction in dockerfile()
                     if instruction.keyword == "RUN" and "-m compileall" in instruction.arguments]
    assert compile_steps, "no RUN step runs compileall"
    assert any(venv in step for step in compile_steps), "compileall does not cover the venv"



def test_dockerfile_runs_as_numeric_non_root_user():
    instructions = dockerfile()
    final = stages(instructions) - 1
    users = [instruction.arguments for instruction in instructions
             if instruction.keyword == "USER" and instruction.stage == final]
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "USER must be numeric for Kubernetes runAsNonRoot"
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0


def test_dockerfile_entrypoint_is_secret_init_with_cmd():
    instructions = dockerfile()
    assert json_form(instructions, "ENTRYPOINT") == ["secret-init", "--"]
    assert json_form(instructions, "CMD")


def test_dockerfile_build_copies_only_package_sources():
    sources = [source.rstrip("/") for source in build_copy_sources(dockerfile())]
    # "." would send tests, .venv and .git into the build stage's layers.
    assert "." not in sources
    assert sorted(sources) == ["README.md", "pyproject.toml", "secret_init", "setup.cfg"]


def test_dockerfile_installs_copied_source_not_editable():
    instructions = dockerfile()
    installs = [instruction.arguments for instruction in instructions
                if instruction.keyword == "RUN" and "pip install" in instruction.arguments]
    assert len(installs) == 1, "expected one RUN step with pip install"
    (command,) = installs
    source, extras = pip_install_source(command)
    destinations = [posixpath.normpath(shlex.split(strip_run_flags(instruction.arguments)[1])[-1])
                    for instruction in instructions
                    if instruction.keyword == "COPY" and instruction.stage == 0]
    assert posixpath.normpath(source) in destinations, f"no COPY writes {source}"
    assert extras == "${SECRET_INIT_EXTRAS}"
    # An editable install would leave the venv pointing at /src, which the runtime stage lacks.
    assert not re.search(r"\s(-e|--editable)\b", command)


# -- build and run ----------------------------------------------------------------------------

def build_arguments(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults of the build stage, overridden by compose.yaml's build args."""
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ARG":
            values.update(key_values(instruction.arguments))
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text(encoding="utf-8"))
    values.update({name: str(value) for name, value in
                   compose["services"]["app"]["build"].get("args", {}).items()})
    return values


def environment_without_pythonpath() -> dict[str, str]:
    """The test's environment without PYTHONPATH, so the checkout is never imported by accident."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def build_environment(tmp_path: Path) -> dict[str, str]:
    """The environment of the build's RUN steps: ``python`` is the test interpreter."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "python").symlink_to(sys.executable)
    return {**environment_without_pythonpath(), "PATH": f"{tools}:{os.environ['PATH']}"}


def build_venv(tmp_path: Path, image_root: Path) -> Path:
    """Run the build stage's COPY and RUN steps in order, with the changes the module
    docstring lists, and return the virtual environment they build."""
    instructions = dockerfile()
    image_venv = venv_path(instructions)
    venv = tmp_path / "venv"
    variables = build_arguments(instructions)
    environment = build_environment(tmp_path)

    build_stage = [instruction for instruction in instructions if instruction.stage == 0]
    emulated = {"FROM", "ARG", "COPY", "RUN"}
    unknown = {instruction.keyword for instruction in build_stage} - emulated
    assert not unknown, f"the build stage uses {sorted(unknown)}, which this test does not run"
    copied: list[str] = []
    installs = 0
    for instruction in build_stage:
        if instruction.keyword == "COPY":
            copied.append(run_copy(expand(instruction.arguments, variables), ROOT, image_root))
            continue
        if instruction.keyword != "RUN":
            continue
        flags, command = strip_run_flags(instruction.arguments)
        command = expand(command, variables).replace(image_venv, str(venv))
        for secret_id, target in secret_mount_targets(flags).items():
            command = command.replace(target, str(tmp_path / "absent-build-secrets" / secret_id))
        install = pip_install_source(command)
        if install is not None:
            source, _ = install
            assert posixpath.normpath(source) in map(posixpath.normpath, copied), \
                f"pip installs {source}, which no earlier COPY wrote"
            command = command.replace(f'"{source}[', f'"{image_root / source.lstrip("/")}[')
            installs += 1
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                                cwd=tmp_path, env=environment, timeout=PIP_TIMEOUT_SECONDS)
        assert result.returncode == 0, f"RUN {command}\n{result.stdout}\n{result.stderr}"
    assert installs == 1, f"the build stage has {installs} pip install steps, expected 1"
    return venv


def installed_distributions(venv: Path) -> set[str]:
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, check=True)
    return {item["name"].lower() for item in json.loads(result.stdout)}


def runtime_path(instructions: list[Instruction], image_venv: str, venv: Path) -> str:
    """PATH as the runtime stage's ENV sets it, with the image venv mapped to ``venv``."""
    final = stages(instructions) - 1
    path = os.environ["PATH"]
    for instruction in instructions:
        if instruction.keyword == "ENV" and instruction.stage == final:
            values = key_values(instruction.arguments)
            if "PATH" in values:
                path = expand(values["PATH"], {"PATH": path}).replace(image_venv, str(venv))
    return path


def copied_files(instructions: list[Instruction]) -> dict[str, Path]:
    """Image path -> repository file, for the runtime stage's plain COPY lines."""
    final = stages(instructions) - 1
    copies = {}
    for instruction in instructions:
        if instruction.keyword == "COPY" and instruction.stage == final \
                and not instruction.arguments.startswith("--"):
            source, destination = instruction.arguments.split()
            copies[destination] = ROOT / source
    return copies


def test_dockerfile_venv_starts_app_on_tmpfs(tmp_path: Path):
    require_mount_namespace()
    instructions = dockerfile()
    image_venv = venv_path(instructions)
    image_root = tmp_path / "image"
    venv = build_venv(tmp_path, image_root)
    # The runtime stage copies only the venv, so the copied sources must not be needed.
    shutil.rmtree(image_root)

    extras = build_arguments(instructions)["SECRET_INIT_EXTRAS"].split(",")
    installed = installed_distributions(venv)
    assert "secret-init" in installed
    assert "pyyaml" in installed
    if "sops" in extras:
        assert "cryptography" in installed
    if "vault" not in extras:
        assert "hvac" not in installed, "an extra that was not asked for was installed"
    assert list(venv.rglob("secret_init/__pycache__/cli.*.pyc")), "bytecode was not precompiled"
    located = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import secret_init; print(secret_init.__file__)"],
                             capture_output=True, text=True, cwd=tmp_path,
                             env=environment_without_pythonpath(), timeout=60)
    assert located.returncode == 0, located.stderr
    assert Path(located.stdout.strip()).is_relative_to(venv), "secret_init is not inside the venv"

    # The ENTRYPOINT and CMD, resolved through the runtime stage's PATH and COPY lines.
    path = runtime_path(instructions, image_venv, venv)
    entrypoint = json_form(instructions, "ENTRYPOINT")
    command = json_form(instructions, "CMD")
    copies = copied_files(instructions)
    command = [str(copies.get(part, part)) for part in command]
    executable = shutil.which(entrypoint[0], path=path)
    assert executable == str(venv / "bin" / "secret-init")
    argv = [executable, *entrypoint[1:], *command]

    compose_app = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["app"]
    tmpfs_path, _, tmpfs_options = compose_app["tmpfs"][0].partition(":")
    environment = {**environment_without_pythonpath(), "PATH": path,
                   "SECRET_INIT_MANIFEST": str(COMPOSE / "manifest.yaml"),
                   "SECRET_INIT_FAKE": str(COMPOSE / "dev-secrets.yaml")}
    # NOTE: the image runs as uid 10001; this runs as root, because the test interpreter may
    # sit in a folder other users cannot enter. Ownership of the files is checked instead.
    script = f"exec {shlex.join(argv)}"

    result = subprocess.run(in_tmpfs_namespace(script, mount_point=tmpfs_path,
                                               options=tmpfs_options),
                            capture_output=True, text=True, env=environment, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "wrote 3 secrets to /run/secrets" in result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert set(lines) == {"db_password", "api_token", "app.env"}
    for name, line in lines.items():
        assert "0o400" in line, name
        assert "owner 10001:10001" in line, name
    assert "exported by the manifest: API_TOKEN" in result.stdout
