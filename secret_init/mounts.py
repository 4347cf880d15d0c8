"""Find the filesystem type under a path, from /proc/self/mountinfo."""

from __future__ import annotations

import os

MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")
MOUNTINFO = "/proc/self/mountinfo"


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal: \040 \011 \012 \134.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1:i + 4]) == 3 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def filesystem_type(path: str, mountinfo: str = MOUNTINFO) -> tuple[str, str]:
    """Return (filesystem type, mount point) of the mount that contains ``path``.

    The path need not exist: its nearest existing ancestor decides. A mount counts only if
    its device (the major:minor field) is the device the path is on, so a tmpfs that a later
    mount on a parent folder hides is not mistaken for the filesystem in use. Among those,
    the longest mount point wins, and the last line for equal ones, because a later mount
    on the same point hides the earlier one. Without a match the type is "".
    """
    probe = os.path.realpath(path)
    while not os.path.exists(probe) and probe != "/":
        probe = os.path.dirname(probe)
    device = os.stat(probe).st_dev
    device_text = f"{os.major(device)}:{os.minor(device)}"
    best = ("", "/")
    best_length = -1
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as stream:
        for line in stream:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) < 5 or not right:
                continue
            if fields[2] != device_text:
                continue
            mount_point = _unescape(fields[4])
            fstype = right.split()[0]
            inside = probe == mount_point or probe.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= best_length:
                best, best_length = (fstype, mount_point), len(mount_point)
    return best


def is_memory_filesystem(path: str) -> tuple[bool, str, str]:
    """Return whether ``path`` is on tmpfs or ramfs, with the type and mount point found."""
    fstype, mount_point = filesystem_type(path)
    return fstype in MEMORY_FILESYSTEMS, fstype, mount_point
