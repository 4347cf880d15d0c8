"""Command-line options and their SECRET_INIT_* variables: each variable works, the option wins.

Options that only change the supervisor are observed from the command, which reads the
supervisor's argv from /proc/<parent pid>/cmdline.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from secret_init import __version__
from secret_init.cli import build_parser
from tests.cli import CliResult, filesystem_type, run_cli

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart" / "manifest.yaml"
QUICKSTART_VALUES = ["dev-db-password", "dev-api-token-123", "ZGV2ZWxvcG1lbnQga2V5"]

MANIFEST = "manifest.yaml"
MANIFEST_TEXT = """\
version: 1
backends:
  dev: {type: file, path: ./dev.yaml}
secrets:
  token: {from: dev, key: token}
"""

# The command: prints its uid and gid and, under a supervisor, the supervisor's argv, then
# exits with the code in argv[2].
PROBE = r'''
import json, os, sys, time
report = {"uid": os.getuid(), "gid": os.getgid()}
if sys.argv[1] == "init":
    path = f"/proc/{os.getppid()}/cmdline"
    # The supervisor replaces secret-init (started as "python -m secret_init") right after
    # the fork; wait, for a bounded number of rounds, until it has.
    for _ in range(400):
        with open(path, "rb") as stream:
            data = stream.read()
        if b"-m\0secret_init\0" not in data:
            break
        time.sleep(0.025)
    report["supervisor_argv"] = [part.decode() for part in data.split(b"\0") if part]
print(json.dumps(report), flush=True)
sys.exit(int(sys.argv[2]))
'''

SUPERVISING_WARNING = "supervising without being PID 1 or a child subreaper"
EXEC_LINE = "replacing secret-init"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "dev.yaml").write_text("token: tok-from-dev\n")
    (tmp_path / MANIFEST).write_text(MANIFEST_TEXT)
    return tmp_path


def probe(mode: str, exit_code: int = 0) -> list[str]:
    return ["--", sys.executable, "-c", PROBE, mode, str(exit_code)]


def run_probe(workdir: Path, args: list[str], env: dict[str, str], *, mode: str,
              exit_code: int = 0) -> tuple[CliResult, dict]:
    result = run_cli(["-f", MANIFEST, "--output-dir", str(workdir / "out"), "--allow-disk",
                      *args, *probe(mode, exit_code)], env=env, cwd=workdir)
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result, report


def supervisor_option(report: dict, flag: str) -> str | None:
    argv = report["supervisor_argv"]
    return argv[argv.index(flag) + 1] if flag in argv else None


# -- --version, --help, check, plan -----------------------------------------------------------

def test_version_exits_zero():
    result = run_cli(["--version"])

    assert result.code == 0
    assert result.stdout.strip() == f"secret-init {__version__}"


def test_help_exits_zero():
    result = run_cli(["--help"])

    assert result.code == 0
    assert result.stdout.startswith("usage: secret-init")
    assert "exit codes:" in result.stdout


@pytest.mark.parametrize("variable", [
    "MANIFEST", "FAKE", "OUTPUT_DIR", "ALLOW_DISK", "TIMEOUT", "LOG_LEVEL", "LOG_FORMAT",
    "MODE=init", "MODE=exec", "SUBREAPER", "KILL_PROCESS_GROUP", "STOP_TIMEOUT", "GRACE_PERIOD",
    "REMAP_EXIT", "USER", "CLEANUP",
])
def test_help_names_variable(variable):
    result = run_cli(["--help"])

    assert f"SECRET_INIT_{variable}" in re.sub(r"\s+", "", result.stdout)


def test_every_option_documents_variable():
    parser = build_parser()
    options = [action for action in parser._actions
               if action.option_strings and action.dest not in ("help", "version")]

    assert len(options) >= 15
    for action in options:
        assert "[SECRET_INIT_" in (action.help or ""), action.option_strings


def test_check_prints_summary():
    result = run_cli(["check", "-f", str(QUICKSTART)])

    assert result.code == 0, result.stderr
    assert result.stdout == f"{QUICKSTART}: valid, 5 secrets, 1 backend (file)\n"
    assert result.stderr == ""


def test_plan_never_prints_value():
    result = run_cli(["plan", "-f", str(QUICKSTART), "--log-level", "debug"])

    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "FILE", "MODE", "OWNER", "ENV"]
    assert any(line.startswith("db_password ") for line in lines)
    assert any(line.startswith("flags (optional)") for line in lines)
    assert "API_TOKEN" in result.stdout
    assert "5 files to /run/secrets, from 1 backend" in result.stdout
    for value in QUICKSTART_VALUES:
        assert value not in result.output


def test_plan_fake_prints_no_value(tmp_path):
    (tmp_path / "fake.yaml").write_text("db_password: fake-pw-8c2e\napi_token: fake-token-8c2e\n")

    result = run_cli(["plan", "-f", str(QUICKSTART), "--fake", str(tmp_path / "fake.yaml")])

    assert result.code == 0, result.stderr
    assert f"from fake values in {tmp_path / 'fake.yaml'}" in result.stdout
    assert "fake-pw-8c2e" not in result.output
    assert "fake-token-8c2e" not in result.output


def test_quickstart_fetch(tmp_path):
    output = tmp_path / "out"

    result = run_cli(["fetch", "-f", str(QUICKSTART), "--output-dir", str(output), "--allow-disk"])

    assert result.code == 0, result.stderr
    assert (output / "db_password").read_bytes() == b"dev-db-password"
    assert (output / "app.env").read_bytes() == b"DATABASE_URL=postgres://web:dev-db-password@db:5432/web\n"
    assert oct((output / "tls.key").stat().st_mode & 0o7777) == "0o440"
    for value in QUICKSTART_VALUES:
        assert value not in result.output


# -- each variable, and the option winning over it --------------------------------------------

def test_manifest_variable(workdir):
    (workdir / "other.yaml").write_text(MANIFEST_TEXT)

    from_variable = run_cli(["check"], env={"SECRET_INIT_MANIFEST": MANIFEST}, cwd=workdir)
    from_option = run_cli(["check", "-f", "other.yaml"], env={"SECRET_INIT_MANIFEST": MANIFEST},
                          cwd=workdir)

    assert from_variable.stdout.startswith(f"{MANIFEST}: valid")
    assert from_option.stdout.startswith("other.yaml: valid")


def test_fake_variable(workdir):
    (workdir / "fake-a.yaml").write_text("token: from-variable\n")
    (workdir / "fake-b.yaml").write_text("token: from-option\n")
    env = {"SECRET_INIT_FAKE": "fake-a.yaml"}
    base = ["fetch", "-f", MANIFEST, "--allow-disk"]

    from_variable = run_cli([*base, "--output-dir", "out-a"], env=env, cwd=workdir)
    from_option = run_cli([*base, "--output-dir", "out-b", "--fake", "fake-b.yaml"], env=env,
                          cwd=workdir)

    assert from_variable.code == 0, from_variable.stderr
    assert (workdir / "out-a" / "token").read_text() == "from-variable"
    assert from_option.code == 0, from_option.stderr
    assert (workdir / "out-b" / "token").read_text() == "from-option"


def test_output_dir_variable(workdir):
    env = {"SECRET_INIT_OUTPUT_DIR": str(workdir / "from-variable")}

    from_variable = run_cli(["fetch", "-f", MANIFEST, "--allow-disk"], env=env, cwd=workdir)
    from_option = run_cli(["fetch", "-f", MANIFEST, "--allow-disk", "--output-dir",
                           str(workdir / "from-option")], env=env, cwd=workdir)

    assert from_variable.code == 0, from_variable.stderr
    assert (workdir / "from-variable" / "token").read_text() == "tok-from-dev"
    assert from_option.code == 0, from_option.stderr
    assert (workdir / "from-option" / "token").read_text() == "tok-from-dev"


def test_allow_disk_variable(workdir):
    if filesystem_type(workdir) in ("tmpfs", "ramfs"):
        pytest.skip(f"{workdir} is on a memory filesystem, so the disk check cannot fail")
    base = ["fetch", "-f", MANIFEST]

    allowed = run_cli([*base, "--output-dir", "a"], env={"SECRET_INIT_ALLOW_DISK": "true"},
                      cwd=workdir)
    rejected = run_cli([*base, "--output-dir", "b"], env={"SECRET_INIT_ALLOW_DISK": "false"},
                      cwd=workdir)
    option_wins = run_cli([*base, "--output-dir", "c", "--allow-disk"],
                          env={"SECRET_INIT_ALLOW_DISK": "false"}, cwd=workdir)

    assert allowed.code == 0, allowed.stderr
    assert rejected.code == 78
    assert "not tmpfs" in rejected.stderr
    assert option_wins.code == 0, option_wins.stderr


def test_timeout_variable(workdir):
    os.mkfifo(workdir / "never.pipe")
    (workdir / MANIFEST).write_text(MANIFEST_TEXT.replace(
        "secrets:", "  stuck: {type: file, path: ./never.pipe, format: raw}\nsecrets:")
        + "  late: {from: stuck}\n")
    base = ["fetch", "-f", MANIFEST, "--allow-disk", "--output-dir", "out"]

    from_variable = run_cli(base, env={"SECRET_INIT_TIMEOUT": "1"}, cwd=workdir)
    from_option = run_cli([*base, "--timeout", "500ms"], env={"SECRET_INIT_TIMEOUT": "abc"},
                          cwd=workdir)

    assert from_variable.code == 75
    assert "within the 1 s deadline" in from_variable.stderr
    assert from_option.code == 75
    assert "within the 0.5 s deadline" in from_option.stderr


def test_invalid_timeout_variable_named(workdir):
    result = run_cli(["fetch", "-f", MANIFEST], env={"SECRET_INIT_TIMEOUT": "abc"}, cwd=workdir)

    assert result.code == 64
    assert "SECRET_INIT_TIMEOUT" in result.stderr
    assert "'abc' is not a duration" in result.stderr


def test_log_level_variable(workdir):
    base = ["fetch", "-f", MANIFEST, "--allow-disk", "--output-dir", "out"]
    env = {"SECRET_INIT_LOG_LEVEL": "debug"}

    from_variable = run_cli(base, env=env, cwd=workdir)
    from_option = run_cli([*base, "--log-level", "warning"], env=env, cwd=workdir)

    assert from_variable.code == 0, from_variable.stderr
    assert "secret-init: DEBUG" in from_variable.stderr
    assert from_option.code == 0, from_option.stderr
    assert "DEBUG" not in from_option.stderr
    assert "INFO" not in from_option.stderr
    assert "WARNING" in from_option.stderr


def test_log_format_variable(workdir):
    base = ["fetch", "-f", MANIFEST, "--allow-disk", "--output-dir", "out"]
    env = {"SECRET_INIT_LOG_FORMAT": "json"}

    from_variable = run_cli(base, env=env, cwd=workdir)
    from_option = run_cli([*base, "--log-format", "text"], env=env, cwd=workdir)

    assert from_variable.code == 0, from_variable.stderr
    entries = [json.loads(line) for line in from_variable.stderr.splitlines()]
    assert any(entry.get("event") == "written" for entry in entries)
    assert from_option.code == 0, from_option.stderr
    assert "secret-init: INFO wrote 1 secret " in from_option.stderr


def test_mode_variable(workdir):
    init_result, init_report = run_probe(workdir, [], {"SECRET_INIT_MODE": "init"}, mode="init")
    exec_result, _ = run_probe(workdir, ["--no-init"], {"SECRET_INIT_MODE": "init"}, mode="exec")
    option_init, _ = run_probe(workdir, ["--init"], {"SECRET_INIT_MODE": "exec"}, mode="init")

    assert init_result.code == 0, init_result.stderr
    assert SUPERVISING_WARNING in init_result.stderr
    assert init_report["supervisor_argv"]
    assert exec_result.code == 0, exec_result.stderr
    assert EXEC_LINE in exec_result.stderr
    assert SUPERVISING_WARNING not in exec_result.stderr
    assert option_init.code == 0, option_init.stderr
    assert SUPERVISING_WARNING in option_init.stderr


def test_subreaper_variable(workdir):
    from_variable, _ = run_probe(workdir, ["--init"], {"SECRET_INIT_SUBREAPER": "true"},
                                 mode="init")
    from_option, _ = run_probe(workdir, ["--init", "--subreaper"],
                               {"SECRET_INIT_SUBREAPER": "false"}, mode="init")
    neither, _ = run_probe(workdir, ["--init"], {"SECRET_INIT_SUBREAPER": "false"}, mode="init")

    assert from_variable.code == 0, from_variable.stderr
    assert SUPERVISING_WARNING not in from_variable.stderr
    assert from_option.code == 0, from_option.stderr
    assert SUPERVISING_WARNING not in from_option.stderr
    assert SUPERVISING_WARNING in neither.stderr


def test_kill_process_group_variable(workdir):
    _, from_variable = run_probe(workdir, ["--init"], {"SECRET_INIT_KILL_PROCESS_GROUP": "yes"},
                                 mode="init")
    _, from_option = run_probe(workdir, ["--init", "--kill-process-group"],
                               {"SECRET_INIT_KILL_PROCESS_GROUP": "no"}, mode="init")
    _, neither = run_probe(workdir, ["--init"], {"SECRET_INIT_KILL_PROCESS_GROUP": "no"},
                           mode="init")

    assert "--kill-process-group" in from_variable["supervisor_argv"]
    assert "--kill-process-group" in from_option["supervisor_argv"]
    assert "--kill-process-group" not in neither["supervisor_argv"]


@pytest.mark.parametrize("option, variable", [("--stop-timeout", "STOP_TIMEOUT"),
                                              ("--grace-period", "GRACE_PERIOD")])
def test_duration_variable(workdir, option, variable):
    env = {f"SECRET_INIT_{variable}": "7s"}

    _, from_variable = run_probe(workdir, ["--init"], env, mode="init")
    _, from_option = run_probe(workdir, ["--init", option, "1500ms"], env, mode="init")

    assert supervisor_option(from_variable, option) == "7.0"
    assert supervisor_option(from_option, option) == "1.5"


@pytest.mark.parametrize("option, variable", [("--stop-timeout", "STOP_TIMEOUT"),
                                              ("--grace-period", "GRACE_PERIOD")])
def test_duration_variable_invalid(workdir, option, variable):
    result = run_cli(["-f", MANIFEST, "--", "true"], env={f"SECRET_INIT_{variable}": "later"},
                     cwd=workdir)

    assert result.code == 64
    assert "'later' is not a duration" in result.stderr
    assert f"SECRET_INIT_{variable}" in result.stderr


def test_remap_exit_variable(workdir):
    env = {"SECRET_INIT_REMAP_EXIT": "4:1, 3:0"}

    from_variable, _ = run_probe(workdir, ["--init"], env, mode="init", exit_code=3)
    from_option, _ = run_probe(workdir, ["--init", "--remap-exit", "3:9"], env, mode="init",
                               exit_code=3)
    unmapped, _ = run_probe(workdir, ["--init"], env, mode="init", exit_code=5)

    assert from_variable.code == 0, from_variable.stderr
    assert from_option.code == 9, from_option.stderr
    assert unmapped.code == 5, unmapped.stderr


def test_remap_exit_variable_invalid(workdir):
    result = run_cli(["-f", MANIFEST, "--", "true"], env={"SECRET_INIT_REMAP_EXIT": "3-0"},
                     cwd=workdir)

    assert result.code == 64
    assert "'3-0'" in result.stderr
    assert "FROM:TO" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_variable(workdir):
    # A system shell, because the test's Python may sit where the other user cannot reach.
    print_uid = ["--", "/bin/sh", "-c", "id -u"]
    base = ["-f", MANIFEST, "--output-dir", str(workdir / "out"), "--allow-disk", "--no-init"]
    env = {"SECRET_INIT_USER": "nobody"}

    from_variable = run_cli([*base, *print_uid], env=env, cwd=workdir)
    variable_owner = (workdir / "out" / "token").stat().st_uid
    from_option = run_cli([*base, "--user", "0:0", *print_uid], env=env, cwd=workdir)
    option_owner = (workdir / "out" / "token").stat().st_uid

    assert from_variable.code == 0, from_variable.stderr
    assert from_variable.stdout.strip() == "65534"
    assert variable_owner == 65534
    assert from_option.code == 0, from_option.stderr
    assert from_option.stdout.strip() == "0"
    assert option_owner == 0


def test_cleanup_variable(workdir):
    from_variable, _ = run_probe(workdir, ["--init"], {"SECRET_INIT_CLEANUP": "on"}, mode="init")
    variable_left = os.path.lexists(workdir / "out" / "token")
    from_option, _ = run_probe(workdir, ["--init", "--cleanup"], {"SECRET_INIT_CLEANUP": "off"},
                               mode="init")
    option_left = os.path.lexists(workdir / "out" / "token")
    neither, _ = run_probe(workdir, ["--init"], {"SECRET_INIT_CLEANUP": "off"}, mode="init")
    neither_left = os.path.lexists(workdir / "out" / "token")

    assert from_variable.code == 0, from_variable.stderr
    assert variable_left is False
    assert from_option.code == 0, from_option.stderr
    assert option_left is False
    assert neither.code == 0, neither.stderr
    assert neither_left is True


def test_empty_variable_is_unset(workdir):
    result = run_cli(["check", "-f", MANIFEST], env={"SECRET_INIT_LOG_LEVEL": "",
                                                     "SECRET_INIT_TIMEOUT": ""}, cwd=workdir)

    assert result.code == 0, result.stderr
