"""Run commands in a private mount namespace with a real tmpfs, as root."""

from __future__ import annotations

import functools
import os
import subprocess

import pytest


@functools.lru_cache(maxsize=None)
def mount_namespace_refusal() -> str | None:
    """Return why a private mount namespace with a tmpfs is unavailable, or None when it works."""
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         "mkdir -p /run/si-probe && mount -t tmpfs tmpfs /run/si-probe && umount /run/si-probe"],
        capture_output=True, text=True)
    if probe.returncode != 0:
        return f"the kernel refused a private mount namespace with tmpfs: {probe.stderr.strip()}"
    return None


def require_mount_namespace() -> None:
    reason = mount_namespace_refusal()
    if reason:
        pytest.skip(reason)


def in_tmpfs_namespace(script: str, *, mount_point: str = "/run/secrets",
                       options: str = "size=4m,mode=0755") -> list[str]:
    """Return argv running ``script`` (sh) after mounting a fresh tmpfs at ``mount_point``."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
            f"mkdir -p {mount_point} && mount -t tmpfs -o {options} tmpfs {mount_point}\n{script}"]
