"""Build the command's environment: without our credentials, with the exports asked for."""

from __future__ import annotations

import os
from typing import Iterable, Mapping

from .errors import DataError

# The kernel's limit on one "NAME=value" string passed to execve (MAX_ARG_STRLEN, 32 pages).
MAX_ENV_VALUE_BYTES = 128 * 1024

# Credentials secret-init may read itself, removed from the child's environment unless the
# manifest lists them under keep_env. Backends add the ones they actually read.
CREDENTIAL_VARIABLES = frozenset({
    "VAULT_TOKEN", "VAULT_SECRET_ID", "VAULT_ROLE_ID",
    "SOPS_AGE_KEY", "SOPS_AGE_KEY_CMD",
})


def check_env_value(name: str, variable: str, value: bytes) -> str:
    """Return ``value`` as text for the environment, or raise DataError explaining the limit."""
    if b"\x00" in value:
        raise DataError(f"cannot export to environment variable {variable}: the value contains a "
                        "NUL byte, which an environment cannot hold; read the file instead "
                        f"(env_file: {variable}_FILE)", secret=name)
    if len(value) + len(variable) + 1 > MAX_ENV_VALUE_BYTES:
        raise DataError(f"cannot export to environment variable {variable}: the value is "
                        f"{len(value)} bytes, over the kernel's {MAX_ENV_VALUE_BYTES}-byte limit "
                        f"for one variable; read the file instead (env_file: {variable}_FILE)",
                        secret=name)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("utf-8", errors="surrogateescape")


def child_environment(base: Mapping[str, str], *, remove: Iterable[str], keep: Iterable[str],
                      exports: Mapping[str, str]) -> dict[str, str]:
    """Return ``base`` minus the credential variables in ``remove`` (except ``keep``), plus ``exports``."""
    keep_set = set(keep)
    drop = (set(remove) | CREDENTIAL_VARIABLES) - keep_set
    env = {name: value for name, value in base.items() if name not in drop}
    env.update(exports)
    return env


def process_environment() -> dict[str, str]:
    """Return a copy of this process's environment, decoding bytes the way os.environ does."""
    return {os.fsdecode(k): os.fsdecode(v) for k, v in os.environb.items()}
