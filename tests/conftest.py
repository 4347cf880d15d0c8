"""Shared test set-up: the repository root on sys.path, and no stray AWS or Vault settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
for path in (str(ROOT), str(TESTS)):
    if path not in sys.path:
        sys.path.insert(0, path)

# No test may reach a real cloud endpoint or the instance metadata address.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for name in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "AWS_PROFILE",
             "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
             "SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "SECRET_INIT_MANIFEST", "SECRET_INIT_FAKE"):
    os.environ.pop(name, None)


@pytest.fixture(autouse=True)
def _forget_redacted_values():
    from secret_init import redact

    yield
    redact.clear()
