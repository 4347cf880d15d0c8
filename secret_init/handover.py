"""Hand the process over to the application: exec it, or supervise it as PID 1."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
from dataclasses import dataclass, field
from typing import NoReturn

from .errors import CommandNotExecutableError, CommandNotFoundError, os_reason

log = logging.getLogger(__name__)


@dataclass
class HandOverOptions:
    """How to start the command once the secrets are written."""

    # "auto": supervise when PID 1, exec otherwise; "init": always supervise; "exec": never.
    mode: str = "auto"
    subreaper: bool = False
    kill_process_group: bool = False
    stop_timeout: float = 10.0
    grace_period: float = 5.0
    remap_exit: dict[int, int] = field(default_factory=dict)
    user: str | None = None
    cleanup_dir: str | None = None


def resolve_command(command: list[str], env: dict[str, str]) -> str:
    """Return the executable path for ``command[0]`` the way execvp finds it, or raise 126/127."""
    name = command[0]
    if "/" in name:
        if not os.path.exists(name):
            raise CommandNotFoundError(f"command '{name}' not found")
        path = name
    else:
        path = shutil.which(name, mode=os.F_OK, path=env.get("PATH", os.defpath))
        if path is None:
            raise CommandNotFoundError(
                f"command '{name}' not found in PATH ({env.get('PATH', os.defpath)})")
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise CommandNotExecutableError(f"command '{name}' ({path}) is not executable")
    return path


def reset_signals() -> None:
    """Undo what Python changed, because ignored dispositions and the mask survive execve."""
    for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                   signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def exec_command(command: list[str], env: dict[str, str]) -> NoReturn:
    """Replace this process with ``command``; raise CommandNotFound/NotExecutable on failure."""
    path = resolve_command(command, env)
    reset_signals()
    try:
        os.execve(path, command, env)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            raise CommandNotFoundError(f"command '{command[0]}' not found: {os_reason(error)}") from None
        raise CommandNotExecutableError(
            f"command '{command[0]}' could not be executed: {os_reason(error)}") from None


def hand_over(command: list[str], env: dict[str, str], options: HandOverOptions) -> NoReturn:
    """Start ``command`` with ``env``; never returns."""
    # TODO: supervise as PID 1 (mode "init" or "auto" when PID 1); for now always exec.
    exec_command(command, env)
