"""A canary secret must never appear in anything secret-init prints, on success or failure.

Every run logs at debug level, in text and in JSON lines, and the whole stdout and stderr
are searched for the canary and its base64 forms. The command's own argv and environment
(read by the command from /proc) are checked too: the canary may be there only when the
manifest exports it with ``env:``.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest

from tests.cli import CliResult, filesystem_type, run_cli

CANARY = "CANARY-7f3a9b1e-do-not-print"
# Decoding base64 fails only for values without '-' and '_', so the base64 failure
# path gets a canary of its own.
CANARY_NOT_BASE64 = "CANARY7f3a9b1eDoNotPrint*!"


def canary_forms(value: str) -> list[str]:
    raw = value.encode()
    return [value, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
            base64.b64encode(raw).decode().rstrip("=")]


FORBIDDEN = canary_forms(CANARY) + canary_forms(CANARY_NOT_BASE64)
LOG_FORMATS = ["text", "json"]

MANIFEST = "manifest.yaml"
DEV_SECRETS = f"""\
db:
  password: {CANARY}
  user: app
blob: {base64.b64encode(CANARY.encode()).decode()}
not_base64: "{CANARY_NOT_BASE64}"
"""
BACKENDS = """\
backends:
  dev: {type: file, path: ./dev.yaml}
  raw: {type: file, path: ./raw.json, format: raw}
"""
GOOD_SECRETS = """\
  password: {from: dev, key: db.password}
  blob: {from: dev, key: blob, encoding: base64}
  url: {template: "postgres://app:${password}@db/app"}
"""

CHILD = r'''
import json, os, sys, time

forms = json.loads(open(sys.argv[1]).read())


def contains(path):
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    return any(form.encode() in data for form in forms)


report = {"cmdline": contains("/proc/self/cmdline"), "environ": contains("/proc/self/environ"),
          "exported": os.environ.get("APP_PASSWORD") == forms[0],
          "names_with_canary": sorted(k for k, v in os.environ.items()
                                      if any(form in v for form in forms))}
if sys.argv[2] == "init":
    parent = f"/proc/{os.getppid()}"
    # The supervisor replaces secret-init (started as "python -m secret_init") right after
    # the fork; wait, for a bounded number of rounds, until it has.
    for _ in range(400):
        with open(parent + "/cmdline", "rb") as stream:
            if b"-m\0secret_init\0" not in stream.read():
                break
        time.sleep(0.025)
    report["parent_cmdline"] = contains(parent + "/cmdline")
    report["parent_environ"] = contains(parent + "/environ")
print(json.dumps(report))
'''


def assert_no_canary(result: CliResult) -> None:
    for form in FORBIDDEN:
        assert form not in result.output


def assert_json_lines(result: CliResult) -> list[dict]:
    """Parse every stderr line as JSON and return the entries."""
    entries = []
    for line in result.stderr.splitlines():
        entry = json.loads(line)
        assert isinstance(entry, dict)
        assert {"time", "level", "logger", "message"} <= entry.keys()
        entries.append(entry)
    return entries


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "dev.yaml").write_text(DEV_SECRETS)
    (tmp_path / "raw.json").write_text(json.dumps({"password": CANARY, "user": "app"}))
    (tmp_path / "forms.json").write_text(json.dumps(canary_forms(CANARY)))
    (tmp_path / "child.py").write_text(CHILD)
    return tmp_path


def write_manifest(directory: Path, secrets: str, *, head: str = "version: 1\n") -> None:
    (directory / MANIFEST).write_text(head + BACKENDS + "secrets:\n" + secrets)


def run_debug(directory: Path, log_format: str, *args: str, command: list[str] | None = None,
              allow_disk: bool = True, env: dict[str, str] | None = None) -> CliResult:
    argv = [*args, "-f", MANIFEST, "--log-level", "debug", "--log-format", log_format]
    if "--output-dir" not in args and args[:1] not in (("check",), ("plan",)):
        argv += ["--output-dir", str(directory / "out")]
    if allow_disk:
        argv.append("--allow-disk")
    if command is not None:
        argv += ["--", *command]
    result = run_cli(argv, cwd=directory, env=env)
    if log_format == "json":
        assert_json_lines(result)
    return result


# -- success ----------------------------------------------------------------------------------

@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_fetch_success_prints_no_canary(workdir, log_format):
    write_manifest(workdir, GOOD_SECRETS)

    result = run_debug(workdir, log_format, "fetch")

    assert result.code == 0, result.stderr
    assert (workdir / "out" / "password").read_text() == CANARY
    assert (workdir / "out" / "blob").read_text() == CANARY
    assert "current version directory" in result.stderr
    assert_no_canary(result)


@pytest.mark.parametrize("subcommand, expected", [
    ("plan", "3 files to /run/secrets, from 1 backend"),
    ("check", "manifest.yaml: valid, 3 secrets"),
])
@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_offline_subcommand_prints_no_canary(workdir, log_format, subcommand, expected):
    write_manifest(workdir, GOOD_SECRETS)

    result = run_debug(workdir, log_format, subcommand, allow_disk=False)

    assert result.code == 0, result.stderr
    assert expected in result.stdout
    assert_no_canary(result)


def test_json_fetch_lines_carry_fields(workdir):
    write_manifest(workdir, GOOD_SECRETS)

    result = run_debug(workdir, "json", "fetch")

    assert result.code == 0, result.stderr
    fetched = [entry for entry in assert_json_lines(result) if entry.get("event") == "fetched"]
    assert sorted(entry["secret"] for entry in fetched) == ["blob", "password"]
    for entry in fetched:
        assert entry["backend"] == "dev"
        assert entry["source"] == f"dev:{workdir / 'dev.yaml'}"
        assert isinstance(entry["ms"], int)
        assert entry["level"] == "info"


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_fake_mode_prints_no_canary(workdir, log_format):
    (workdir / "fake.yaml").write_text(f"password: {CANARY}\nblob: {CANARY}\n")
    write_manifest(workdir, GOOD_SECRETS)

    result = run_debug(workdir, log_format, "fetch", "--fake", "fake.yaml")

    assert result.code == 0, result.stderr
    assert (workdir / "out" / "url").read_text() == f"postgres://app:{CANARY}@db/app"
    assert_no_canary(result)


# -- the command's argv and environment ------------------------------------------------------

@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_exec_child_sees_no_canary(workdir, log_format):
    write_manifest(workdir, GOOD_SECRETS)

    result = run_debug(workdir, log_format, "--no-init",
                       command=[sys.executable, "child.py", "forms.json", "exec"])

    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cmdline"] is False
    assert report["environ"] is False
    assert report["names_with_canary"] == []
    assert_no_canary(result)


def test_exec_child_gets_exported_canary(workdir):
    write_manifest(workdir, GOOD_SECRETS + "  exported: {from: dev, key: db.password, "
                                           "env: APP_PASSWORD}\n")

    result = run_debug(workdir, "text", "--no-init",
                       command=[sys.executable, "child.py", "forms.json", "exec"])

    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["exported"] is True
    assert report["names_with_canary"] == ["APP_PASSWORD"]
    assert report["cmdline"] is False
    assert_no_canary(result)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_supervised_child_sees_no_canary(workdir, log_format):
    write_manifest(workdir, GOOD_SECRETS)

    result = run_debug(workdir, log_format, "--init",
                       command=[sys.executable, "child.py", "forms.json", "init"])

    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cmdline"] is False
    assert report["environ"] is False
    assert report["parent_cmdline"] is False
    assert report["parent_environ"] is False
    assert_no_canary(result)


# -- failures ---------------------------------------------------------------------------------

@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_missing_key_next_to_canary(workdir, log_format):
    write_manifest(workdir, "  a: {from: raw, key: pass}\n")

    result = run_debug(workdir, log_format, "fetch")

    assert result.code == 65
    assert "keys there: password, user" in result.stderr
    assert_no_canary(result)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_invalid_base64_canary(workdir, log_format):
    write_manifest(workdir, "  a: {from: dev, key: not_base64, encoding: base64}\n")

    result = run_debug(workdir, log_format, "fetch")

    assert result.code == 65
    assert "not valid base64" in result.stderr
    assert_no_canary(result)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_invalid_json_containing_canary(workdir, log_format):
    (workdir / "raw.json").write_text('{"password": "' + CANARY + '", "user": app}')
    write_manifest(workdir, "  a: {from: raw, key: password}\n")

    result = run_debug(workdir, log_format, "fetch")

    assert result.code == 65
    assert "not valid JSON" in result.stderr
    assert_no_canary(result)


# Each document has a syntax error on the line that contains the canary. A password that
# starts with '*' or '!' is an alias or a tag to YAML, and PyYAML's message quotes it.
BROKEN_YAML = {
    "unclosed quote": f'db:\n  password: "{CANARY}\n  user: app\n',
    "alias": f"db:\n  password: *{CANARY}\n",
    "tag": f"db:\n  password: !{CANARY}\n",
    "bad indentation": f"db:\n  password: {CANARY}\n   user: app\n",
    "reserved character": f"db:\n  password: @{CANARY}\n",
}


@pytest.mark.parametrize("log_format", LOG_FORMATS)
@pytest.mark.parametrize("document", list(BROKEN_YAML.values()), ids=list(BROKEN_YAML))
def test_yaml_error_on_canary_line(workdir, log_format, document):
    (workdir / "dev.yaml").write_text(document)
    write_manifest(workdir, "  a: {from: dev, key: db.password}\n")

    result = run_debug(workdir, log_format, "fetch")

    assert result.code == 65
    assert "not valid YAML" in result.stderr
    assert_no_canary(result)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
@pytest.mark.parametrize("document", list(BROKEN_YAML.values()), ids=list(BROKEN_YAML))
def test_fake_yaml_error_on_canary_line(workdir, log_format, document):
    (workdir / "fake.yaml").write_text(document)
    write_manifest(workdir, GOOD_SECRETS)

    result = run_debug(workdir, log_format, "fetch", "--fake", "fake.yaml")

    assert result.code == 65
    assert "not valid YAML" in result.stderr
    assert_no_canary(result)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_fake_missing_value(workdir, log_format):
    (workdir / "fake.yaml").write_text(f"password: {CANARY}\n")
    write_manifest(workdir, GOOD_SECRETS)

    result = run_debug(workdir, log_format, "fetch", "--fake", "fake.yaml")

    assert result.code == 66
    assert "no value in fake file" in result.stderr
    assert_no_canary(result)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_template_error_after_fetch(workdir, log_format):
    write_manifest(workdir, GOOD_SECRETS + "  maybe: {from: dev, key: absent, optional: true}\n"
                                           '  combined: {template: "${password}:${maybe}"}\n')

    result = run_debug(workdir, log_format, "fetch")

    assert result.code == 78
    assert "template uses optional secret 'maybe'" in result.stderr
    assert_no_canary(result)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_template_error_in_plan(workdir, log_format):
    write_manifest(workdir, GOOD_SECRETS + '  combined: {template: "${password}:${nope}"}\n')

    result = run_debug(workdir, log_format, "fetch")

    assert result.code == 78
    assert "unknown secret '${nope}'" in result.stderr
    assert_no_canary(result)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_not_tmpfs_failure(workdir, log_format):
    if filesystem_type(workdir) in ("tmpfs", "ramfs"):
        pytest.skip(f"{workdir} is on a memory filesystem, so the check cannot fail")
    write_manifest(workdir, GOOD_SECRETS)

    result = run_debug(workdir, log_format, "fetch", allow_disk=False)

    assert result.code == 78
    assert "not tmpfs" in result.stderr
    assert_no_canary(result)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_command_not_found_failure(workdir, log_format):
    write_manifest(workdir, GOOD_SECRETS)

    result = run_debug(workdir, log_format, "--no-init", command=["no-such-command-4d1c"])

    assert result.code == 127
    assert_no_canary(result)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_env_too_large_failure(workdir, log_format):
    large = (CANARY + " ") * (140 * 1024 // (len(CANARY) + 1))
    (workdir / "large.yaml").write_text(json.dumps({"value": large}))
    head = "version: 1\n"
    manifest = (head + BACKENDS + "  large: {type: file, path: ./large.yaml}\nsecrets:\n"
                "  big: {from: large, key: value, env: BIG}\n")
    (workdir / MANIFEST).write_text(manifest)

    result = run_debug(workdir, log_format, "--no-init", command=["true"])

    assert result.code == 65
    assert "environment variable BIG" in result.stderr
    assert_no_canary(result)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_deadline_failure(workdir, log_format):
    # Opening a FIFO that no process writes blocks, so this backend never returns a result.
    os.mkfifo(workdir / "never.pipe")
    manifest = ("version: 1\ntimeout: 1s\n" + BACKENDS
                + "  stuck: {type: file, path: ./never.pipe, format: raw}\n"
                + "secrets:\n" + GOOD_SECRETS + "  late: {from: stuck}\n")
    (workdir / MANIFEST).write_text(manifest)

    result = run_debug(workdir, log_format, "fetch")

    assert result.code == 75
    assert "deadline" in result.stderr
    assert_no_canary(result)
