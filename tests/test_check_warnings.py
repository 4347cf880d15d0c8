"""A backend whose optional libraries are missing fails with one line naming the pip command."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs the CLI with the given top-level modules made unimportable, as in an image built
# without that extra: importlib.util.find_spec returns None for a None entry in sys.modules.
HIDE_AND_RUN = textwrap.dedent("""
    import sys
    for name in sys.argv[1].split(","):
        sys.modules[name] = None
    from secret_init.cli import run_cli
    sys.exit(run_cli(sys.argv[2:]))
""")

CASES = {
    "vault": ("hvac", "backends:\n  v: {type: vault, address: http://127.0.0.1:1}\n"
                      "secrets:\n  a: {from: v, path: secret/web/db, key: password}\n"),
    "aws": ("botocore", "backends:\n  a: {type: aws-secretsmanager, region: eu-west-1}\n"
                        "secrets:\n  a: {from: a, id: prod/db}\n"),
    "sops": ("cryptography", "backends:\n  s: {type: sops, path: ./x.enc.yaml}\n"
                             "secrets:\n  a: {from: s, key: password}\n"),
}


def run_hidden(tmp_path: Path, hidden: str, arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE_AND_RUN, hidden, *arguments],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                               "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true",
                               "VAULT_TOKEN": "unused"})


@pytest.mark.parametrize("extra", sorted(CASES))
def test_missing_extra_fails_with_pip_command(tmp_path, extra):
    module, body = CASES[extra]
    (tmp_path / "m.yaml").write_text("version: 1\n" + body)

    result = run_hidden(tmp_path, module, ["-f", "m.yaml", "--output-dir", str(tmp_path / "out"),
                                           "--allow-disk", "fetch"])

    assert result.returncode == 78, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert f"pip install 'secret-init[{extra}]'" in errors[0]
    assert module in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", sorted(CASES))
def test_check_warns_about_missing_extra(tmp_path, extra):
    module, body = CASES[extra]
    (tmp_path / "m.yaml").write_text("version: 1\n" + body)

    result = run_hidden(tmp_path, module, ["-f", "m.yaml", "check"])

    assert result.returncode == 0, result.stderr
    assert f"pip install 'secret-init[{extra}]'" in result.stderr
    assert "valid" in result.stdout


def test_vault_without_address_warns_in_check_and_fails_run(tmp_path):
    (tmp_path / "m.yaml").write_text("version: 1\n" + CASES["vault"][1].replace(
        ", address: http://127.0.0.1:1", ""))

    checked = run_hidden(tmp_path, "nothing_hidden", ["-f", "m.yaml", "check"])
    fetched = run_hidden(tmp_path, "nothing_hidden", ["-f", "m.yaml", "--output-dir",
                                                      str(tmp_path / "out"), "--allow-disk",
                                                      "fetch"])

    assert checked.returncode == 0, checked.stderr
    assert "VAULT_ADDR" in checked.stderr
    assert fetched.returncode == 78
    assert "VAULT_ADDR" in fetched.stderr
    assert not (tmp_path / "out").exists()
