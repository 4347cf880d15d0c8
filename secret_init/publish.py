"""Write the rendered secrets to the output directory and publish them atomically.

The layout is the one Kubernetes uses for secret volumes, so readers and tools already
know it::

    /run/secrets/..2026_12_04_20_42_30.123456789   version directory with the files
    /run/secrets/..data -> ..2026_12_04_...           swapped atomically by rename(2)
    /run/secrets/db_password -> ..data/db_password    stable names for the application

A reader sees the whole old set or the whole new set, never a mix. Each file is created
with O_EXCL|O_NOFOLLOW in a fresh directory, gets its final owner and mode before the first
byte is written, and is fsynced. Until the ``..data`` rename the previous set is untouched,
so a kill -9 at any moment leaves it intact. Leftovers of an interrupted run are removed by
the next one.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from .errors import ConfigError, OutputError, os_reason
from .mounts import is_memory_filesystem

log = logging.getLogger(__name__)

DATA_LINK = "..data"
VERSION_PREFIX = ".."
# Temporary names used while swapping; they start with ".." so no secret name can collide.
DATA_LINK_TMP = "..data_tmp"
NAME_LINK_TMP_PREFIX = "..link_tmp_"


@dataclass(frozen=True)
class OutputFile:
    """One file to write: its name, content, mode and owner."""

    name: str
    content: bytes
    mode: int
    uid: int
    gid: int


def check_memory_filesystem(directory: str, *, allow_disk: bool, fake_only: bool) -> None:
    """Fail unless ``directory`` is on tmpfs or ramfs, or writing to disk was allowed."""
    try:
        in_memory, fstype, mount_point = is_memory_filesystem(directory)
    except OSError as error:
        raise OutputError(f"cannot read the mount table to check {directory}: {os_reason(error)}") from None
    if in_memory:
        return
    where = f"{directory} is on {fstype or 'an unknown filesystem'} (mounted at {mount_point})"
    if allow_disk:
        log.warning("%s, not tmpfs: secrets will be written to disk because allow_disk is set", where)
        return
    if fake_only:
        log.warning("%s, not tmpfs: writing fake development values there anyway", where)
        return
    raise ConfigError(
        f"{where}, not tmpfs: secrets would be written to disk. Mount a memory filesystem there "
        f"(docker run --tmpfs {directory}, compose 'tmpfs: {directory}', or a Kubernetes "
        "emptyDir with medium: Memory), or set output.allow_disk: true / --allow-disk to accept it")


def _version_name() -> str:
    now = time.time_ns()
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now // 1_000_000_000))
    return f"{VERSION_PREFIX}{stamp}.{now % 1_000_000_000:09d}.{os.getpid()}"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(directory_fd: int, item: OutputFile) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    # Created with no permissions at all; owner and mode are set before any byte is written.
    fd = os.open(item.name, flags, 0o000, dir_fd=directory_fd)
    try:
        if (item.uid, item.gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, item.uid, item.gid)
        os.fchmod(fd, item.mode)
        view = memoryview(item.content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_symlink(directory: str, name: str, target: str, temporary: str) -> None:
    """Point ``directory/name`` at ``target`` with one rename, never leaving it missing."""
    temporary_path = os.path.join(directory, temporary)
    try:
        os.unlink(temporary_path)
    except FileNotFoundError:
        pass
    os.symlink(target, temporary_path)
    os.rename(temporary_path, os.path.join(directory, name))


def _ensure_directory(directory: str, mode: int) -> None:
    try:
        os.makedirs(directory, mode=mode, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the output directory {directory}: {os_reason(error)}") from None
    if not os.path.isdir(directory):
        raise OutputError(f"the output path {directory} exists but is not a directory")


def _remove_tree(path: str, *, ignore_errors: bool = False) -> None:
    """Remove a directory tree; shutil walks it by descriptor and never follows a symlink."""
    # Imported here: most runs remove nothing, and start-up time is measured.
    import shutil

    shutil.rmtree(path, ignore_errors=ignore_errors)


def remove_stale_entries(directory: str, keep: set[str]) -> None:
    """Remove version directories and temporary links not in ``keep`` (leftovers included)."""
    for entry in os.listdir(directory):
        if not entry.startswith(VERSION_PREFIX) or entry in keep:
            continue
        path = os.path.join(directory, entry)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                _remove_tree(path)
            else:
                os.unlink(path)
        except OSError as error:
            log.warning("could not remove old entry %s: %s", path, os_reason(error))


def publish(directory: str, files: list[OutputFile], *, dir_mode: int, dir_uid: int,
            dir_gid: int) -> str:
    """Write ``files`` into a new version directory and make it the current set.

    Returns the path of the new version directory. On any failure before the swap, the new
    directory is removed and the previous set stays current.
    """
    _ensure_directory(directory, 0o755)
    # Leftovers of an interrupted run (or entries someone planted under our reserved names)
    # go first, so nothing in the way can fail the run after the swap.
    data_link = os.path.join(directory, DATA_LINK)
    current = os.readlink(data_link) if os.path.islink(data_link) else None
    remove_stale_entries(directory, keep={DATA_LINK, current} - {None})
    for item in files:
        link = os.path.join(directory, item.name)
        if os.path.lexists(link) and not os.path.islink(link):
            raise OutputError(f"{link} exists and is not a secret-init link; remove it or "
                              "choose an empty output directory", secret=item.name)
    version = _version_name()
    version_path = os.path.join(directory, version)
    try:
        os.mkdir(version_path, 0o700)
    except OSError as error:
        raise OutputError(f"cannot create {version_path}: {os_reason(error)}") from None

    swapped = False
    try:
        directory_fd = os.open(version_path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for item in files:
                try:
                    _write_file(directory_fd, item)
                except PermissionError as error:
                    raise OutputError(
                        f"cannot give {item.name} owner {item.uid}:{item.gid} and mode "
                        f"{item.mode:04o}: {os_reason(error)}; only root can give a file another "
                        f"owner, so run secret-init as root, or remove owner, group and "
                        f"--user/user: so the files belong to uid {os.geteuid()}",
                        secret=item.name) from None
                except OSError as error:
                    raise OutputError(f"cannot write {item.name} in {version_path}: "
                                      f"{os_reason(error)}", secret=item.name) from None
            if (dir_uid, dir_gid) != (os.geteuid(), os.getegid()):
                os.fchown(directory_fd, dir_uid, dir_gid)
            os.fchmod(directory_fd, dir_mode)
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)

        previous_names = _current_names(directory)
        _replace_symlink(directory, DATA_LINK, version, DATA_LINK_TMP)
        swapped = True
        for item in files:
            link = os.path.join(directory, item.name)
            if os.path.islink(link) and os.readlink(link) == f"{DATA_LINK}/{item.name}":
                continue
            _replace_symlink(directory, item.name, f"{DATA_LINK}/{item.name}",
                             NAME_LINK_TMP_PREFIX + item.name[:64])
        for name in previous_names - {item.name for item in files}:
            os.unlink(os.path.join(directory, name))
        _fsync_dir(directory)
    except OSError as error:
        raise OutputError(f"cannot publish the secrets in {directory}: {os_reason(error)}") from None
    finally:
        if not swapped:
            _remove_tree(version_path, ignore_errors=True)

    remove_stale_entries(directory, keep={version, DATA_LINK})
    return version_path


def _current_names(directory: str) -> set[str]:
    """Return the names of the links that point into ..data, from an earlier publish."""
    names = set()
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if not entry.startswith(".") and os.path.islink(path) and \
                os.readlink(path).startswith(DATA_LINK + "/"):
            names.add(entry)
    return names
