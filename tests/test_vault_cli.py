"""The vault backend through the real command line, with settings from the process environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vault_emulator import VaultEmulator

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def vault():
    with VaultEmulator() as emulator:
        emulator.enable_kv("secret", version=2)
        emulator.kv_put("secret", "web/db", {"password": "pw-from-vault"})
        yield emulator


def run_secret_init(tmp_path: Path, env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
            "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "secret_init", *arguments], cwd=tmp_path,
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


def test_environment_settings_reach_vault(vault, tmp_path):
    vault.require_namespace("team-a")
    (tmp_path / "m.yaml").write_text(
        "version: 1\nbackends:\n  vault: {type: vault}\n"
        "secrets:\n  db: {from: vault, path: secret/web/db, key: password}\n")
    env = {"VAULT_ADDR": vault.url, "VAULT_TOKEN": vault.root_token, "VAULT_NAMESPACE": "team-a"}

    result = run_secret_init(tmp_path, env, "-f", "m.yaml", "--output-dir", str(tmp_path / "out"),
                             "--allow-disk", "--", "sh", "-c", 'echo "token=${VAULT_TOKEN:-unset}"')

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "db").read_text() == "pw-from-vault"
    assert vault.requests
    assert {request.namespace for request in vault.requests} == {"team-a"}
    # The token secret-init used is not handed to the application.
    assert result.stdout == "token=unset\n"
    assert "pw-from-vault" not in result.stderr
