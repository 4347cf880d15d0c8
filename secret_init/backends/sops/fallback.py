"""Decrypting with the ``sops`` binary, for key types that have no native source here.

GCP KMS, Azure Key Vault, HuaweiCloud KMS and post-quantum or plugin age keys are decrypted
by running ``sops decrypt`` when it is on PATH. The encrypted file goes through a private
temporary folder because it may have come from another backend rather than from disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from typing import Any, Mapping

from ...deadline import Deadline
from ...errors import DataError, DeadlineExceededError, IntegrityError, PermissionDeniedError

SOPS_PROGRAM = "sops"
# sops decrypt exits 51 on a MAC mismatch (cmd/sops/codes).
SOPS_EXIT_MAC_MISMATCH = 51
MIN_SECONDS = 1.0
STDERR_CHARS_SHOWN = 300


def find_sops(environ: Mapping[str, str], program: str = SOPS_PROGRAM) -> str | None:
    return shutil.which(program, path=environ.get("PATH", os.defpath))


def decrypt_with_sops(binary: str, data: bytes, file_format: str, environ: Mapping[str, str],
                      deadline: Deadline, source: str, verify_mac: bool) -> Any:
    """Run ``sops decrypt`` and return the document (bytes for binary files).

    NOTE: structured documents come back through JSON output, so YAML timestamps arrive as
    strings here, not as datetimes as in the native path.
    """
    output_type = "binary" if file_format == "binary" else "json"
    with tempfile.TemporaryDirectory(prefix="secret-init-sops-") as folder:
        path = os.path.join(folder, "encrypted")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as stream:
            stream.write(data)
        argv = [binary]
        if not verify_mac:
            argv.append("--ignore-mac")
        argv += ["decrypt", "--input-type", file_format, "--output-type", output_type, path]
        try:
            completed = subprocess.run(argv, env=dict(environ), capture_output=True, check=False,
                                       timeout=max(MIN_SECONDS, deadline.remaining()))
        except subprocess.TimeoutExpired:
            raise DeadlineExceededError(f"sops decrypt of {source} did not finish before the "
                                        "fetch deadline") from None
    if completed.returncode != 0:
        message = " ".join(completed.stderr.decode("utf-8", errors="replace").split())
        message = message[-STDERR_CHARS_SHOWN:]
        if completed.returncode == SOPS_EXIT_MAC_MISMATCH:
            raise IntegrityError(f"{source}: MAC mismatch reported by sops: the file was "
                                 "modified or is damaged")
        raise PermissionDeniedError(f"sops decrypt of {source} failed with exit code "
                                    f"{completed.returncode}: {message}")
    if output_type == "binary":
        return completed.stdout
    try:
        return json.loads(completed.stdout)
    except json.JSONDecodeError:
        raise DataError(f"sops decrypt of {source} returned output that is not JSON") from None
