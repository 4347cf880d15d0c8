"""Run ``python -m secret_init`` as a subprocess, the way a container starts its entrypoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

ROOT = Path(__file__).resolve().parent.parent

# A guard against a hung run, not a timing assertion: no test here should come near it.
MAX_RUN_SECONDS = 120

# Variables from the developer's shell that would change what a run does.
_DROPPED_PREFIXES = ("SECRET_INIT_", "VAULT_", "AWS_", "SOPS_")


class CliResult(NamedTuple):
    """Exit code and decoded output of one run; unpacks as (code, stdout, stderr)."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together, for searches that cover everything the run printed."""
        return self.stdout + self.stderr


def clean_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return this process's environment without secret-init and backend settings, plus ``env``."""
    base = {name: value for name, value in os.environ.items()
            if not name.startswith(_DROPPED_PREFIXES)}
    base["PYTHONPATH"] = str(ROOT)
    base["AWS_EC2_METADATA_DISABLED"] = "true"
    base.update(env or {})
    return base


def run_cli(args: Sequence[str], *, env: Mapping[str, str] | None = None,
            cwd: str | Path | None = None) -> CliResult:
    """Run secret-init with ``args`` and return (exit code, stdout, stderr)."""
    completed = subprocess.run(
        [sys.executable, "-m", "secret_init", *args],
        env=clean_environment(env), cwd=cwd, stdin=subprocess.DEVNULL,
        capture_output=True, timeout=MAX_RUN_SECONDS, check=False)
    return CliResult(completed.returncode,
                     completed.stdout.decode("utf-8", errors="replace"),
                     completed.stderr.decode("utf-8", errors="replace"))


def filesystem_type(path: str | Path) -> str:
    """Return the filesystem type of ``path`` as coreutils ``stat -f`` names it (tmpfs, ext2/ext3)."""
    completed = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True,
                               text=True, check=True)
    return completed.stdout.strip()
