"""Hand the process over to the application: exec it, or supervise it as PID 1.

Exec mode replaces secret-init with the command, so the application gets secret-init's pid.
Supervise mode forks the command and then replaces secret-init with the small stdlib-only
supervisor in ``supervisor.py``, which forwards signals, reaps every process, stops what is
left when the command exits and returns the command's exit code. Both modes switch to the
requested user first and exit 127 or 126 with a message when the command is not found or
cannot be executed.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import sys
from dataclasses import dataclass, field
from typing import NoReturn

from .errors import (EX_SOFTWARE, CommandNotExecutableError, CommandNotFoundError, ConfigError,
                     SecretInitError, os_reason)
from .privileges import drop_privileges
from .users import Account, current_account, resolve_user

log = logging.getLogger(__name__)

MODES = ("auto", "init", "exec")
# From <linux/prctl.h>.
PR_SET_CHILD_SUBREAPER = 36


@dataclass
class HandOverOptions:
    """How to start the command once the secrets are written."""

    # "auto": supervise when PID 1, exec otherwise; "init": always supervise; "exec": never.
    mode: str = "auto"
    # Outside PID 1, register as child subreaper so orphaned descendants are reaped by us.
    subreaper: bool = False
    # Forward signals to the child's process group instead of the child alone.
    kill_process_group: bool = False
    # Seconds between a forwarded SIGTERM/SIGINT and SIGKILL to the child's process group;
    # 0 sends SIGKILL right after forwarding.
    stop_timeout: float = 10.0
    # Seconds between SIGTERM and SIGKILL to the descendants left after the child exits.
    # The supervisor exits when none is left.
    grace_period: float = 5.0
    # Exit code FROM -> TO, applied to the child's exit code (128+N for signal N).
    # secret-init's own failures (77, 126, 127) are not remapped.
    remap_exit: dict[int, int] = field(default_factory=dict)
    # NAME|UID[:GROUP|GID] to switch to before the command starts; None keeps the current user.
    user: str | None = None
    # Directory whose published secret files are removed when the command exits (supervise
    # mode only).
    cleanup_dir: str | None = None


def hand_over(command: list[str], env: dict[str, str], options: HandOverOptions) -> NoReturn:
    """Start ``command`` with ``env`` as ``options`` set; never returns.

    Raises ConfigError for invalid options, PrivilegeDropError (77) when the user switch
    fails, and CommandNotFoundError (127) or CommandNotExecutableError (126) when the
    command cannot be started. Once supervising, failures of the forked child end the
    process with those codes and a logged message instead.
    """
    validate_options(command, options)
    account = resolve_user(options.user) if options.user is not None else None
    if account is not None:
        env = {**env, "HOME": account.home}
    if should_supervise(options.mode):
        supervise(command, env, account, options)
    if options.cleanup_dir is not None:
        # NOTE: in exec mode no secret-init process remains after execve, so nothing can
        # remove the files when the application exits.
        log.warning("the secret files in %s will not be removed when the command exits, "
                    "because exec mode leaves no process to remove them; pass --init or set "
                    "SECRET_INIT_MODE=init",
                    options.cleanup_dir)
    if options.remap_exit:
        log.warning("--remap-exit is ignored in exec mode: the command replaces secret-init "
                    "and its exit code reaches the caller unchanged; pass --init or set "
                    "SECRET_INIT_MODE=init")
    if options.subreaper:
        log.warning("--subreaper is ignored in exec mode: the command itself replaces "
                    "secret-init and reaps only its own children")
    exec_command(command, env, account)


def preflight_command(command: list[str], env: dict[str, str], user: str | None) -> None:
    """Check, before any secret is fetched, that ``command`` can start as ``user``.

    Without a user switch the check runs in this process. With one, a forked child drops
    to the user and checks there, because root can reach and execute files the user cannot.
    The check is repeated at the hand-over, so this only moves the common failure earlier.
    """
    if user is None or os.geteuid() != 0:
        resolve_command(command, env)
        return
    account = resolve_user(user)
    if (account.uid, account.gid) == (os.geteuid(), os.getegid()):
        resolve_command(command, env)
        return

    report_read, report_write = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: report "CODE\nmessage" and exit, never return
        os.close(report_read)
        code = 0
        message = ""
        try:
            drop_privileges(account)
            resolve_command(command, env)
        except SecretInitError as error:
            code, message = error.exit_code, error.message
        except BaseException as error:  # anything else must not run the parent's code
            code, message = EX_SOFTWARE, f"command check failed: {type(error).__name__}"
        os.write(report_write, f"{code}\n{message}".encode())
        os._exit(0)

    os.close(report_write)
    with os.fdopen(report_read, "rb") as stream:
        report = stream.read().decode(errors="replace")
    os.waitpid(pid, 0)
    code_text, _, message = report.partition("\n")
    code = int(code_text) if code_text.isdigit() else EX_SOFTWARE
    if code == 0:
        return
    error_class = {CommandNotFoundError.exit_code: CommandNotFoundError,
                   CommandNotExecutableError.exit_code: CommandNotExecutableError}.get(code)
    if error_class is not None:
        raise error_class(f"{message} (as user {account.describe()})")
    failure = SecretInitError(message or "the command check failed")
    failure.exit_code = code
    raise failure


def validate_options(command: list[str], options: HandOverOptions) -> None:
    if not command:
        raise ConfigError("no command to start; give it after --")
    if options.mode not in MODES:
        raise ConfigError(f"hand-over mode '{options.mode}' is invalid; use auto, init or exec")
    if options.stop_timeout < 0:
        raise ConfigError(f"stop timeout {options.stop_timeout} is invalid; use 0 or more seconds")
    if options.grace_period < 0:
        raise ConfigError(f"grace period {options.grace_period} is invalid; "
                          "use 0 or more seconds")
    for source, target in options.remap_exit.items():
        if not (0 <= source <= 255 and 0 <= target <= 255):
            raise ConfigError(f"exit code remap {source}:{target} is invalid; "
                              "both codes must be 0-255")


def should_supervise(mode: str) -> bool:
    return mode == "init" or (mode == "auto" and os.getpid() == 1)


def _check_executable(name: str, path: str) -> str | None:
    """Return ``path`` when it can be executed, None when absent; raise 126 when it is blocked."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as error:
        # A folder on the way is not searchable for this user: the file may exist, but this
        # user cannot reach it, which the shell reports as 126, not 127.
        raise CommandNotExecutableError(
            f"command '{name}' ({path}) cannot be reached: {os_reason(error)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise CommandNotExecutableError(f"command '{name}' ({path}) is a directory")
    if not os.access(path, os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise CommandNotExecutableError(
            f"command '{name}' ({path}) is not executable: Permission denied")
    return path


def resolve_command(command: list[str], env: dict[str, str]) -> str:
    """Return the executable path for ``command[0]`` the way execvp finds it, or raise 126/127."""
    name = command[0]
    if "/" in name:
        path = _check_executable(name, name)
        if path is None:
            raise CommandNotFoundError(f"command '{name}' not found")
        return path

    search = env.get("PATH", os.defpath)
    blocked: CommandNotExecutableError | None = None
    for folder in search.split(os.pathsep):
        candidate = os.path.join(folder or ".", name)
        try:
            path = _check_executable(name, candidate)
        except CommandNotExecutableError as error:
            # execvp goes on searching after EACCES and reports it only if nothing else runs.
            blocked = blocked or error
            continue
        if path is not None:
            return path
    if blocked is not None:
        raise blocked
    raise CommandNotFoundError(f"command '{name}' not found in PATH ({search})")


def reset_signals() -> None:
    """Give the command default dispositions and an empty mask.

    Python ignores SIGPIPE and SIGXFSZ, and ignored dispositions and the blocked mask
    survive execve, so without this the application would inherit them.
    """
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # signals reserved by the C library cannot be changed
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def exec_error(name: str, error: OSError) -> SecretInitError:
    """Map an execve failure to 127 (not found) or 126 (cannot be executed)."""
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return CommandNotFoundError(f"command '{name}' not found: {os_reason(error)}")
    return CommandNotExecutableError(f"command '{name}' could not be executed: {os_reason(error)}")


def exec_command(command: list[str], env: dict[str, str], account: Account | None) -> NoReturn:
    """Switch user, then replace this process with ``command``; raise on failure."""
    if account is not None:
        drop_privileges(account)
    # Resolved after the switch, so the executable check uses the application's ids.
    path = resolve_command(command, env)
    log.info("starting %s as user %s, replacing secret-init (pid %d)", command[0],
             (account or current_account()).describe(), os.getpid())
    reset_signals()
    try:
        os.execve(path, command, env)
    except OSError as error:
        raise exec_error(command[0], error) from None


def set_child_subreaper() -> None:
    """Mark this process as child subreaper, so orphaned descendants are reparented to it."""
    import ctypes  # only when supervising as a subreaper

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise ConfigError(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(error)}")


def owns_terminal() -> bool:
    """Return whether stdin is a terminal whose foreground process group is ours.

    Only then does the child take the terminal. A secret-init started in the background of
    a shell must not steal the foreground from the shell.
    """
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def supervise(command: list[str], env: dict[str, str], account: Account | None,
              options: HandOverOptions) -> NoReturn:
    """Fork the command, then replace this process with the supervisor; never returns."""
    from . import supervisor

    is_pid1 = os.getpid() == 1
    if not is_pid1:
        if options.subreaper:
            set_child_subreaper()
        else:
            log.warning("supervising without being PID 1 or a child subreaper: orphaned "
                        "processes are reparented elsewhere and this process cannot reap "
                        "them; run secret-init as PID 1 or pass --subreaper")
    # Found before forking, so the common mistakes fail with a message in this process.
    # The child still reports execve failures (such as a missing script interpreter).
    path = resolve_command(command, env)
    user_label = (account or current_account()).describe()
    take_terminal = owns_terminal()

    # Block every signal before fork: the child unblocks after it resets its dispositions,
    # and this process keeps them blocked across execve into the supervisor, which takes
    # them with sigtimedwait. A signal that arrives in between stays pending for it.
    # NOTE: the mask is per thread. The fetch threads start with every signal blocked, so
    # only this thread takes one here. A thread started some other way could take a signal
    # in this window, and that signal would be lost.
    signal.pthread_sigmask(signal.SIG_BLOCK, supervisor.WAITED_SIGNALS)
    status_read, status_write = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(status_read)
        start_child(command, path, env, account, take_terminal, status_write)
    os.close(status_write)
    try:
        # The child calls setpgid itself too; calling it here as well means neither side
        # has to wait for the other before signalling the group.
        os.setpgid(pid, pid)
    except OSError:
        pass  # the child already called execve (EACCES) or already exited (ESRCH)
    exec_supervisor(pid, status_read, command[0], user_label, options)


def start_child(command: list[str], path: str, env: dict[str, str], account: Account | None,
                take_terminal: bool, status_fd: int) -> NoReturn:
    """In the forked child: own process group, terminal, user switch, execve.

    Runs between fork and execve, so it never returns or raises: a failure is written to
    ``status_fd`` as ``CODE\\nmessage`` for the supervisor, and the child exits with CODE.
    """
    try:
        try:
            os.setpgid(0, 0)
        except OSError as error:
            raise SecretInitError(f"could not start '{command[0]}': setpgid failed: "
                                  f"{os_reason(error)}") from None
        if take_terminal:
            take_foreground()
        if account is not None:
            drop_privileges(account)
        reset_signals()
        os.execve(path, command, env)
    except SecretInitError as error:
        code, message = error.exit_code, str(error)
    except OSError as error:
        failure = exec_error(command[0], error)
        code, message = failure.exit_code, str(failure)
    except BaseException as error:  # noqa: B036 - nothing may unwind out of a forked child
        code, message = EX_SOFTWARE, f"could not start '{command[0]}': {error!r}"
    try:
        os.write(status_fd, f"{code}\n{message}".encode("utf-8", "replace"))
    finally:
        os._exit(code)


def take_foreground() -> None:
    """Make the child's process group the terminal's foreground group.

    The child does this itself, before execve, so the command never runs in the background
    of its own terminal. One Ctrl-C then reaches the command's group exactly once. The
    supervisor is in another group, so it does not receive the SIGINT to forward again.
    A background group calling tcsetpgrp gets SIGTTOU, so SIGTTOU and SIGTTIN are ignored
    around the call (they are blocked too, which the kernel also accepts).
    """
    saved = {signum: signal.signal(signum, signal.SIG_IGN)
             for signum in (signal.SIGTTOU, signal.SIGTTIN)}
    try:
        os.tcsetpgrp(0, os.getpgrp())
    except OSError as error:
        log.warning("could not give the terminal to the command: tcsetpgrp failed: %s",
                    os_reason(error))
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def supervisor_command(python: str) -> list[str]:
    """Return the command line that starts the supervisor in a fresh, minimal interpreter.

    -I ignores PYTHON* variables and the user's site-packages, and -S skips ``site``, which
    costs memory and could import installed packages. The module is imported rather than
    run as a script, so its cached bytecode is used when there is one: compiling it instead
    leaves about 1 MB more resident (CPython 3.11, bench/supervisor_rss.py). The package's
    parent directory goes last on sys.path, so it cannot shadow a standard module.
    """
    from . import supervisor
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(supervisor.__file__)))
    bootstrap = (f"import sys; sys.path.append({package_parent!r}); "
                 "from secret_init.supervisor import main; sys.exit(main(sys.argv[1:]))")
    return [python, "-I", "-S", "-c", bootstrap]


def exec_supervisor(child: int, status_fd: int, name: str, user_label: str,
                    options: HandOverOptions) -> NoReturn:
    """Replace this process with the supervisor in a new interpreter, keeping signals blocked.

    Falls back to supervising in this process when the interpreter cannot be started.
    """
    from . import supervisor
    root_logger = logging.getLogger()
    log_json = any(getattr(handler.formatter, "json_lines", False)
                   for handler in root_logger.handlers)
    argv = supervisor.build_argv(
        child=child, status_fd=status_fd, name=name, user=user_label,
        kill_process_group=options.kill_process_group, stop_timeout=options.stop_timeout,
        grace_period=options.grace_period, remap_exit=options.remap_exit,
        cleanup_dir=options.cleanup_dir, log_level=log.getEffectiveLevel(), log_json=log_json)
    os.set_inheritable(status_fd, True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if sys.executable:
        # The empty environment keeps backend credentials out of /proc/PID/environ.
        try:
            os.execve(sys.executable, supervisor_command(sys.executable) + argv, {})
        except OSError as error:
            log.warning("could not start the separate supervisor (%s: %s); supervising from "
                        "this process, which keeps secret-init's memory", sys.executable,
                        os_reason(error))
    else:
        log.warning("the Python executable is unknown; supervising from this process, "
                    "which keeps secret-init's memory")
    os._exit(supervisor.main(argv))
