"""Invalid manifests, invalid command lines and failing runs, through the real CLI.

Each case checks what a user needs from the error: the exit code, the value or field at
fault, the fix, and for manifest errors the file:line:column of that field. Runtime
failures also check that a failed run writes nothing and keeps the previous set.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cli import CliResult, filesystem_type, run_cli

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_CONFIG = 78
EX_NOT_EXECUTABLE = 126
EX_NOT_FOUND = 127

MANIFEST = "manifest.yaml"
# Two lines, so the first line under `secrets:` is line 5 when `version: 1` comes first.
BACKEND = "backends:\n  dev: {type: file, path: ./dev.yaml}\n"
HEAD = "version: 1\n" + BACKEND
DEV_SECRETS = """\
db:
  password: pw-value-1
  user: app
token: tok-value-2
not_base64: "not*base64!"
"""


@dataclass
class Case:
    """One invalid manifest and what its error message must contain."""

    id: str
    text: str
    fragments: list[str]
    # "LINE:COLUMN", or "LINE" when only the line is fixed. None when no position applies.
    location: str | None
    code: int = EX_CONFIG
    # Text the message must not contain, such as a suggested fix that is itself invalid.
    absent: list[str] = field(default_factory=list)


CASES = [
    Case("missing version", BACKEND + "secrets:\n  a: {from: dev}\n",
         ["missing required field 'version'", "version: 1"], "1:1"),
    Case("wrong version", "version: 2\n" + BACKEND + "secrets:\n  a: {from: dev}\n",
         ["unsupported manifest version 2", "version 1"], "1:10"),
    # A typo of the required section must be named as the unknown field it is, where it is.
    Case("top-level typo secret", HEAD + "secret:\n  a: {from: dev}\n",
         ["unknown field 'secret'", "secrets"], "4:1"),
    Case("secret key typo verison", HEAD + "secrets:\n  a: {from: dev, verison: 2}\n",
         ["unknown field 'verison'", "allowed here", "from"], "5:18"),
    Case("output key typo", "version: 1\noutput: {dri: /run/x}\n" + BACKEND
         + "secrets:\n  a: {from: dev}\n",
         ["unknown field 'dri'", "dir"], "2:10"),
    Case("unknown backend type", "version: 1\nbackends:\n  dev: {type: fiel, path: x}\n"
         "secrets:\n  a: {from: dev}\n",
         ["unknown backend type 'fiel'", "known types", "file"], "3:15"),
    Case("from undefined backend", HEAD + "secrets:\n  a: {from: prod}\n",
         ["backend 'prod' is not defined", "defined: dev"], "5:13"),
    Case("neither from nor template", HEAD + "secrets:\n  a: {key: x}\n",
         ["needs 'from: BACKEND'", "'template:'"], "5:6"),
    Case("template with from", HEAD + "secrets:\n  a: {template: x, from: dev}\n",
         ["'from' cannot be used with 'template'"], "5:26"),
    Case("name with slash", HEAD + "secrets:\n  a/b: {from: dev}\n",
         ["'a/b'", "contains '/'", "single file name"], "5:3"),
    Case("name dot dot", HEAD + "secrets:\n  ..: {from: dev}\n",
         ["'..'", "directory reference"], "5:3"),
    Case("name leading dot", HEAD + "secrets:\n  .hidden: {from: dev}\n",
         ["'.hidden'", "starts with '.'"], "5:3"),
    Case("name with NUL", HEAD + 'secrets:\n  "a\\0b": {from: dev}\n',
         ["a\\0b", "NUL byte"], "5:3"),
    # 128 two-byte characters: 128 characters but 256 bytes, over NAME_MAX.
    Case("name over 255 bytes", HEAD + "secrets:\n  " + "é" * 128 + ": {from: dev}\n",
         ["longer than 255 bytes"], "5:3"),
    Case("duplicate secret name", HEAD + "secrets:\n  a: {from: dev}\n  a: {from: dev}\n",
         ["duplicate key 'a'", "first defined on line 5"], "6:3"),
    Case("mode decimal 400", HEAD + "secrets:\n  a: {from: dev, mode: 400}\n",
         ["400 is a decimal number", '"0400"'], "5:24"),
    # YAML 1.1 reads an unquoted 0400 as octal, the integer 256. The fix is to quote what
    # the user wrote, "0400". A suggested "0256" is a mode the user never wrote.
    Case("mode unquoted 0400", HEAD + "secrets:\n  a: {from: dev, mode: 0400}\n",
         ['"0400"', "quote"], "5:24", absent=['"0256"']),
    Case("mode 999 not octal", HEAD + 'secrets:\n  a: {from: dev, mode: "999"}\n',
         ['"999"', "not an octal number"], "5:24", absent=['"0999"', '"0o999"']),
    Case("dir mode 0800 not octal", 'version: 1\noutput: {dir_mode: "0800"}\n' + BACKEND
         + "secrets:\n  a: {from: dev}\n",
         ['"0800" is not an octal number'], "2:20"),
    Case("relative output dir", "version: 1\noutput: {dir: run/secrets}\n" + BACKEND
         + "secrets:\n  a: {from: dev}\n",
         ["'run/secrets'", "absolute path"], "2:15"),
    Case("bad timeout", "version: 1\ntimeout: soon\n" + BACKEND + "secrets:\n  a: {from: dev}\n",
         ["'soon' is not a duration", "30s"], "2:10"),
    Case("zero timeout", "version: 1\ntimeout: 0\n" + BACKEND + "secrets:\n  a: {from: dev}\n",
         ["timeout", "greater than 0"], "2:10"),
    Case("bad env name", HEAD + "secrets:\n  a: {from: dev, env: 1BAD}\n",
         ["'1BAD'", "not a valid environment variable name"], "5:23"),
    Case("duplicate env variable", HEAD + "secrets:\n  a: {from: dev, env: X}\n"
         "  b: {from: dev, env: X}\n",
         ["variable 'X' is already set by secret 'a'"], "6:23"),
    Case("template unknown reference", HEAD + 'secrets:\n  a: {template: "x ${nope}"}\n',
         ["unknown secret '${nope}'", "known secrets"], "5"),
    Case("template cycle", HEAD + 'secrets:\n  a: {template: "${b}"}\n'
         '  b: {template: "${c}"}\n  c: {template: "${a}"}\n',
         ["cycle", "a -> b -> c -> a"], "5"),
    Case("template lone dollar", HEAD + 'secrets:\n  a: {template: "cost 5$ each"}\n',
         ["lone '$'", "'$$'"], "5"),
    Case("key empty part", HEAD + "secrets:\n  a: {from: dev, key: a..b}\n",
         ["'a..b' has an empty part", 'key: ["tls.key"]'], "5:23"),
    Case("key empty list", HEAD + "secrets:\n  a: {from: dev, key: []}\n",
         ["key list"], "5:23"),
    Case("format not in list", HEAD + "secrets:\n  a: {from: dev, format: toml}\n",
         ["'toml' is not one of", "json, yaml, dotenv, raw"], "5:26"),
    Case("encoding not base64", HEAD + "secrets:\n  a: {from: dev, encoding: hex}\n",
         ["'hex' is not one of: base64"], "5:28"),
    Case("optional not boolean", HEAD + 'secrets:\n  a: {from: dev, optional: "yes"}\n',
         ["must be true or false", "'yes'"], "5:28"),
    Case("file backend path and dir", "version: 1\nbackends:\n"
         "  dev: {type: file, path: ./dev.yaml, dir: /tmp}\nsecrets:\n  a: {from: dev}\n",
         ["'path' and 'dir' cannot be used together"], "3:44"),
    Case("dir backend without file", "version: 1\nbackends:\n  d: {type: file, dir: /tmp}\n"
         "secrets:\n  a: {from: d}\n",
         ["missing required field 'file'"], "5:6"),
    Case("backend name with space", "version: 1\nbackends:\n  bad name: {type: file, path: x}\n"
         "secrets:\n  a: {from: bad name}\n",
         ["'bad name'", "only letters, digits"], "3:3"),
    Case("yaml tab indentation", HEAD + "secrets:\n\ta: {from: dev}\n",
         ["invalid YAML", "'\\t'"], "5:1"),
    Case("yaml bad indentation", HEAD + "secrets:\n  a: {from: dev}\n   b: c\n",
         ["invalid YAML"], "6:4"),
    Case("empty file", "", ["the manifest is empty", "version: 1"], None),
    Case("top level is a list", "- version: 1\n", ["manifest must be a mapping", "a list"], "1:1"),
    Case("owner unknown user", HEAD + "secrets:\n  a: {from: dev, owner: nosuchuser-x}\n",
         ["'nosuchuser-x'", "not a known user name", "numeric uid"], "5"),
    Case("output owner unknown user", "version: 1\noutput: {owner: nosuchuser-x}\n" + BACKEND
         + "secrets:\n  a: {from: dev}\n",
         ["'nosuchuser-x'", "not a known user name"], "2"),
    Case("group unknown", HEAD + "secrets:\n  a: {from: dev, group: nosuchgroup-x}\n",
         ["'nosuchgroup-x'", "not a known group name"], "5"),
    Case("keep_env invalid name", "version: 1\nkeep_env: [OK, 'BAD-NAME']\n" + BACKEND
         + "secrets:\n  a: {from: dev}\n",
         ["'BAD-NAME'", "not a valid environment variable name"], "2"),
    Case("backends not a mapping", "version: 1\nbackends: [dev]\nsecrets:\n  a: {from: dev}\n",
         ["backends", "must be a mapping, not a list"], "2:11"),
    Case("secret entry not a mapping", HEAD + "secrets:\n  a: dev\n",
         ["secrets.a", "must be a mapping"], "5"),
    Case("secrets empty mapping", HEAD + "secrets: {}\n",
         ["no secrets are listed", "add at least one"], "4:10"),
    # `secrets:` with nothing under it is present, so "missing" would send the user looking
    # for a section that is already there.
    Case("secrets empty value", HEAD + "secrets:\n",
         ["no secrets are listed"], "4"),
]


def write_dev_files(directory: Path) -> None:
    (directory / "dev.yaml").write_text(DEV_SECRETS)


def check(directory: Path, text: str) -> CliResult:
    (directory / MANIFEST).write_text(text, encoding="utf-8")
    return run_cli(["check", "-f", MANIFEST], cwd=directory)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("secret-init: ERROR")]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_invalid_manifest(tmp_path, case: Case):
    write_dev_files(tmp_path)

    result = check(tmp_path, case.text)

    assert result.code == case.code, result.stderr
    assert result.stdout == ""
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    message = errors[0]
    for fragment in case.fragments:
        assert fragment in message
    for fragment in case.absent:
        assert fragment not in message
    if case.location is None:
        assert f"{MANIFEST}:" in message
    else:
        assert f"{MANIFEST}:{case.location}:" in message


def test_manifest_not_found(tmp_path):
    result = run_cli(["check", "-f", str(tmp_path / "absent.yaml")])

    assert result.code == EX_NOINPUT
    assert f"manifest {tmp_path / 'absent.yaml'} not found" in result.stderr
    assert "-f/--manifest" in result.stderr
    assert "SECRET_INIT_MANIFEST" in result.stderr


def test_manifest_is_directory(tmp_path):
    result = run_cli(["check", "-f", str(tmp_path)])

    assert result.code == EX_CONFIG
    assert f"manifest {tmp_path} is a directory" in result.stderr
    assert "YAML file" in result.stderr


def test_manifest_not_utf8(tmp_path):
    (tmp_path / MANIFEST).write_bytes(b"version: 1\nsecrets:\n  a\xff: {from: dev}\n")

    result = run_cli(["check", "-f", MANIFEST], cwd=tmp_path)

    assert result.code == EX_CONFIG
    assert f"manifest {MANIFEST} is not UTF-8" in result.stderr
    assert "offset 23" in result.stderr


# -- usage errors ----------------------------------------------------------------------------

USAGE_CASES = [
    ("no command", ["-f", MANIFEST], {}, ["no command given", "-- COMMAND", "fetch"]),
    ("command with check", ["check", "-f", MANIFEST, "--", "true"], {},
     ["'check' takes no command", "'--'"]),
    ("remap exit out of range", ["fetch", "-f", MANIFEST, "--remap-exit", "1:999"], {},
     ["'1:999'", "FROM:TO", "0-255"]),
    ("remap exit not numbers", ["fetch", "-f", MANIFEST, "--remap-exit", "term"], {},
     ["'term'", "FROM:TO"]),
    ("allow disk not boolean", ["fetch", "-f", MANIFEST], {"SECRET_INIT_ALLOW_DISK": "maybe"},
     ["SECRET_INIT_ALLOW_DISK='maybe'", "true or false"]),
    ("timeout not duration", ["fetch", "-f", MANIFEST, "--timeout", "abc"], {},
     ["--timeout", "'abc' is not a duration"]),
    ("timeout zero", ["fetch", "-f", MANIFEST, "--timeout", "0"], {},
     ["--timeout", "greater than 0"]),
    ("mode variable invalid", ["fetch", "-f", MANIFEST], {"SECRET_INIT_MODE": "fork"},
     ["SECRET_INIT_MODE='fork'", "auto, init or exec"]),
    ("log level variable invalid", ["check", "-f", MANIFEST], {"SECRET_INIT_LOG_LEVEL": "loud"},
     ["SECRET_INIT_LOG_LEVEL", "debug"]),
    ("unknown option", ["check", "--colour"], {}, ["unrecognized arguments: --colour"]),
    ("unknown subcommand", ["deploy"], {}, ["invalid choice: 'deploy'"]),
]


@pytest.mark.parametrize("args, env, fragments", [case[1:] for case in USAGE_CASES],
                         ids=[case[0] for case in USAGE_CASES])
def test_usage_error(tmp_path, args, env, fragments):
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + "secrets:\n  a: {from: dev, key: token}\n")

    result = run_cli(args, env=env, cwd=tmp_path)

    assert result.code == EX_USAGE, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert not (tmp_path / "out").exists()


# -- failures at run time --------------------------------------------------------------------

def fetch(directory: Path, secrets: str, *extra: str, backend: str = BACKEND) -> CliResult:
    """Write a manifest with ``secrets`` and run ``fetch`` into directory/out on disk."""
    write_dev_files(directory)
    (directory / MANIFEST).write_text("version: 1\n" + backend + "secrets:\n" + secrets)
    return run_cli(["fetch", "-f", MANIFEST, "--output-dir", str(directory / "out"),
                    "--allow-disk", *extra], cwd=directory)


def assert_nothing_written(output: Path) -> None:
    entries = sorted(os.listdir(output)) if output.exists() else []
    assert entries == []


def test_key_not_found_lists_key_names(tmp_path):
    result = fetch(tmp_path, "  a: {from: dev, key: db.pass}\n")

    assert result.code == EX_DATAERR
    assert "secret 'a'" in result.stderr
    assert "key 'db.pass' not found" in result.stderr
    assert "keys there: password, user" in result.stderr
    assert "pw-value-1" not in result.output
    assert_nothing_written(tmp_path / "out")


def test_key_error_logged_once(tmp_path):
    result = fetch(tmp_path, "  a: {from: dev, key: db.pass}\n")

    assert result.code == EX_DATAERR
    lines = [line for line in error_lines(result.stderr) if "key 'db.pass' not found" in line]
    assert len(lines) == 1, result.stderr


def test_value_not_json_with_key(tmp_path):
    raw = "backends:\n  dev: {type: file, path: ./dev.yaml, format: raw}\n"

    result = fetch(tmp_path, "  a: {from: dev, key: db}\n", backend=raw)

    assert result.code == EX_DATAERR
    assert "secret 'a'" in result.stderr
    assert "key 'db' needs a JSON object" in result.stderr
    assert "not valid JSON" in result.stderr
    assert_nothing_written(tmp_path / "out")


def test_base64_invalid(tmp_path):
    result = fetch(tmp_path, "  a: {from: dev, key: not_base64, encoding: base64}\n")

    assert result.code == EX_DATAERR
    assert "secret 'a'" in result.stderr
    assert "not valid base64" in result.stderr
    assert "remove 'encoding'" in result.stderr
    assert "not*base64!" not in result.output
    assert_nothing_written(tmp_path / "out")


def test_file_backend_file_missing(tmp_path):
    missing = "backends:\n  dev: {type: file, path: ./absent.yaml}\n"

    result = fetch(tmp_path, "  a: {from: dev, key: token}\n", backend=missing)

    assert result.code == EX_NOINPUT
    assert "secret 'a'" in result.stderr
    assert f"{tmp_path / 'absent.yaml'} not found" in result.stderr
    assert_nothing_written(tmp_path / "out")


def test_optional_missing_warns_and_succeeds(tmp_path):
    result = fetch(tmp_path, "  a: {from: dev, key: token}\n"
                             "  b: {from: dev, key: absent, optional: true}\n")

    assert result.code == 0, result.stderr
    assert "WARNING optional secret b is missing, no file written" in result.stderr
    assert (tmp_path / "out" / "a").read_bytes() == b"tok-value-2"
    assert not os.path.lexists(tmp_path / "out" / "b")


def test_required_missing_with_fake(tmp_path):
    (tmp_path / "fake.yaml").write_text("a: fake-a\n")

    result = fetch(tmp_path, "  a: {from: dev, key: token}\n  b: {from: dev, key: token}\n",
                   "--fake", "fake.yaml")

    assert result.code == EX_NOINPUT
    assert "secret 'b'" in result.stderr
    assert "no value in fake file fake.yaml" in result.stderr
    assert "add a line 'b: ...'" in result.stderr
    assert_nothing_written(tmp_path / "out")


def test_output_not_tmpfs_rejected(tmp_path):
    if filesystem_type(tmp_path) in ("tmpfs", "ramfs"):
        pytest.skip(f"{tmp_path} is on a memory filesystem, so the check cannot fail")
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + "secrets:\n  a: {from: dev, key: token}\n")
    output = tmp_path / "out"

    result = run_cli(["fetch", "-f", MANIFEST, "--output-dir", str(output)], cwd=tmp_path)

    assert result.code == EX_CONFIG
    assert f"{output} is on" in result.stderr
    assert "not tmpfs" in result.stderr
    assert f"--tmpfs {output}" in result.stderr
    assert "--allow-disk" in result.stderr
    assert_nothing_written(output)


def test_command_not_found(tmp_path):
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + "secrets:\n  a: {from: dev, key: token}\n")

    result = run_cli(["-f", MANIFEST, "--output-dir", str(tmp_path / "out"), "--allow-disk",
                      "--no-init", "--", "no-such-command-4d1c"], cwd=tmp_path)

    assert result.code == EX_NOT_FOUND
    assert "command 'no-such-command-4d1c' not found" in result.stderr


def test_command_not_executable(tmp_path):
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + "secrets:\n  a: {from: dev, key: token}\n")
    script = tmp_path / "app.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)

    result = run_cli(["-f", MANIFEST, "--output-dir", str(tmp_path / "out"), "--allow-disk",
                      "--no-init", "--", str(script)], cwd=tmp_path)

    assert result.code == EX_NOT_EXECUTABLE
    assert f"command '{script}'" in result.stderr
    assert "not executable" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_command_unreachable_for_user(tmp_path):
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + "secrets:\n  a: {from: dev, key: token}\n")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    script = private / "app.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)

    result = run_cli(["-f", MANIFEST, "--output-dir", str(tmp_path / "out"), "--allow-disk",
                      "--no-init", "--user", "nobody", "--", str(script)], cwd=tmp_path)

    # The file exists; the user cannot reach it, so this is 126 with the reason, not 127.
    assert result.code == EX_NOT_EXECUTABLE, result.stderr
    assert f"command '{script}'" in result.stderr
    assert "Permission denied" in result.stderr


@pytest.mark.parametrize("value, fragment", [
    ('"a\\0b"', "NUL byte"),
    ('"' + "x" * (128 * 1024) + '"', "131072-byte limit"),
], ids=["nul byte", "over 128 KiB"])
def test_env_value_rejected(tmp_path, value, fragment):
    write_dev_files(tmp_path)
    (tmp_path / "env.yaml").write_text(f"value: {value}\n")
    backend = "backends:\n  envsrc: {type: file, path: ./env.yaml}\n"
    (tmp_path / MANIFEST).write_text("version: 1\n" + backend
                                     + "secrets:\n  a: {from: envsrc, key: value, env: APP_VALUE}\n")
    output = tmp_path / "out"

    result = run_cli(["-f", MANIFEST, "--output-dir", str(output), "--allow-disk", "--no-init",
                      "--", "true"], cwd=tmp_path)

    assert result.code == EX_DATAERR
    assert "secret 'a'" in result.stderr
    assert "environment variable APP_VALUE" in result.stderr
    assert fragment in result.stderr
    assert "env_file: APP_VALUE_FILE" in result.stderr
    # The run fails before the command starts, so it should not leave the files behind.
    assert_nothing_written(output)


def test_failure_keeps_previous_set(tmp_path):
    first = fetch(tmp_path, "  a: {from: dev, key: token}\n")
    assert first.code == 0, first.stderr
    output = tmp_path / "out"
    entries_before = sorted(os.listdir(output))
    data_before = os.readlink(output / "..data")

    second = fetch(tmp_path, "  a: {from: dev, key: db.password}\n  b: {from: dev, key: absent}\n")

    assert second.code == EX_DATAERR
    assert "nothing was written" in second.stderr
    assert sorted(os.listdir(output)) == entries_before
    assert os.readlink(output / "..data") == data_before
    assert (output / "a").read_bytes() == b"tok-value-2"


def test_failure_first_run_writes_nothing(tmp_path):
    output = tmp_path / "out"
    output.mkdir()

    result = fetch(tmp_path, "  a: {from: dev, key: token}\n  b: {from: dev, key: absent}\n")

    assert result.code == EX_DATAERR
    assert_nothing_written(output)


def test_template_using_optional_secret_must_be_optional(tmp_path):
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + "secrets:\n"
                                     "  x: {from: dev, key: token, optional: true}\n"
                                     "  t: {template: \"v=${x}\"}\n")

    result = run_cli(["check", "-f", MANIFEST], cwd=tmp_path)

    assert result.code == 78
    assert "template uses optional secret 'x'" in result.stderr
    assert f"{MANIFEST}:6:" in result.stderr


def test_typo_swapped_letters_suggests_from(tmp_path):
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + "secrets:\n  a: {form: dev, key: token}\n")

    result = run_cli(["check", "-f", MANIFEST], cwd=tmp_path)

    assert result.code == 78
    assert "did you mean 'from'?" in result.stderr


def test_command_not_found_before_fetch(tmp_path):
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + "secrets:\n  a: {from: dev, key: token}\n")
    output = tmp_path / "out"

    result = run_cli(["-f", MANIFEST, "--output-dir", str(output), "--allow-disk", "--",
                      "pyhton-no-such-command"], cwd=tmp_path)

    assert result.code == 127
    assert "pyhton-no-such-command" in result.stderr
    assert "fetched" not in result.stderr
    assert not output.exists()


def test_command_unreachable_for_user_fails_before_fetch(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another user")
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + "user: \"10001:10001\"\n"
                                     "secrets:\n  a: {from: dev, key: token}\n")
    script = tmp_path / "root-only.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o700)
    output = tmp_path / "out"

    result = run_cli(["-f", MANIFEST, "--output-dir", str(output), "--allow-disk", "--",
                      str(script)], cwd=tmp_path)

    assert result.code == EX_NOT_EXECUTABLE, result.stderr
    assert "uid 10001" in result.stderr
    assert "fetched" not in result.stderr
    assert not output.exists()


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join(['*' + previous] * 10)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("how", ["fake", "file backend"])
def test_alias_bomb_rejected(tmp_path, how):
    (tmp_path / "laughs.yaml").write_text(LAUGHS)
    (tmp_path / MANIFEST).write_text("version: 1\nbackends:\n  dev: {type: file, path: ./laughs.yaml}\n"
                                     "secrets:\n  a: {from: dev, key: a}\n")
    extra = ["--fake", "laughs.yaml"] if how == "fake" else []

    result = run_cli(["-f", MANIFEST, "--output-dir", str(tmp_path / "out"), "--allow-disk",
                      *extra, "fetch"], cwd=tmp_path)

    assert result.code == 65
    assert "through aliases" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", ['"04400"', '"02750"', '"01770"'])
def test_special_mode_bits_rejected(tmp_path, mode):
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + f"secrets:\n  a: {{from: dev, key: token, mode: {mode}}}\n")

    result = run_cli(["check", "-f", MANIFEST], cwd=tmp_path)

    assert result.code == 78
    assert "setuid, setgid or sticky" in result.stderr


def test_other_readable_mode_warns(tmp_path):
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + 'secrets:\n  a: {from: dev, key: token, mode: "0644"}\n')

    result = run_cli(["check", "-f", MANIFEST], cwd=tmp_path)

    assert result.code == 0
    assert "every user in the container" in result.stderr


@pytest.mark.parametrize("field, value", [("env", '"APP\\n"'), ("keep_env", '["HOME\\n"]')])
def test_env_name_with_newline_rejected(tmp_path, field, value):
    write_dev_files(tmp_path)
    secret = f"  a: {{from: dev, key: token, env: {value}}}\n" if field == "env" else \
        "  a: {from: dev, key: token}\n"
    top = f"keep_env: {value}\n" if field == "keep_env" else ""
    (tmp_path / MANIFEST).write_text(HEAD + top + "secrets:\n" + secret)

    result = run_cli(["check", "-f", MANIFEST], cwd=tmp_path)

    assert result.code == 78
    assert "not a valid environment variable name" in result.stderr


def test_startup_variable_export_warns(tmp_path):
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + "secrets:\n  a: {from: dev, key: token, env: LD_PRELOAD}\n")

    result = run_cli(["check", "-f", MANIFEST], cwd=tmp_path)

    assert result.code == 0
    assert "LD_PRELOAD" in result.stderr
    assert "every program" in result.stderr


@pytest.mark.parametrize("name, content, fragment", [
    ("self.yaml", "a: &a [1, *a]\n", "cannot contain itself"),
    ("deep.yaml", "a: " + "[" * 3000 + "]" * 3000 + "\n", "nests too deeply"),
    ("deep.json", '{"a": ' + "[" * 100000 + "]" * 100000 + "}", "nests too deeply"),
], ids=["self alias", "deep yaml", "deep json"])
def test_hostile_document_is_data_error(tmp_path, name, content, fragment):
    (tmp_path / name).write_text(content)
    (tmp_path / MANIFEST).write_text(f"version: 1\nbackends:\n  dev: {{type: file, path: ./{name}}}\n"
                                     "secrets:\n  a: {from: dev, key: a}\n")

    result = run_cli(["-f", MANIFEST, "--output-dir", str(tmp_path / "out"), "--allow-disk",
                      "fetch"], cwd=tmp_path)

    assert result.code == 65, result.stderr
    assert fragment in result.stderr


def test_other_writable_mode_rejected(tmp_path):
    write_dev_files(tmp_path)
    (tmp_path / MANIFEST).write_text(HEAD + 'secrets:\n  a: {from: dev, key: token, mode: "0602"}\n')

    result = run_cli(["check", "-f", MANIFEST], cwd=tmp_path)

    assert result.code == 78
    assert "replace the content" in result.stderr
