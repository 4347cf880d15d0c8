"""Supervise the application: forward signals, reap every process, return the child's exit code.

``handover.py`` forks the application, then replaces its own process with a fresh
``python -I -S`` interpreter that imports this module and calls ``main`` with options such
as ``--child PID``. The resident supervisor therefore keeps none of what secret-init loaded
to fetch the secrets (hvac, botocore, the manifest, the values), only this module and the
interpreter. For that reason it imports nothing else from ``secret_init`` (whose
``__init__`` must stay free of imports) and only the standard library modules that an
``-S`` interpreter has already loaded, plus ``signal``. It writes its log lines itself,
because importing ``logging`` costs about 1.7 MB of resident memory (measured on CPython
3.11 with ``VmRSS``).

Every signal arrives blocked: ``handover.py`` blocks all of them before it forks, and the
blocked mask and any pending signals survive ``execve``. One loop takes them with
``sigtimedwait`` and does every ``waitpid`` in the process, so no other code can reap the
main child's status.

Options come on the command line, so they must never contain secret values.
"""

from __future__ import annotations

import os
import signal
import sys
import time

# Exit codes, kept equal to those in secret_init/errors.py (a test checks this), because
# this file must not import the secret_init package.
EX_SOFTWARE = 70
EX_USAGE = 64
EX_SIGNAL_BASE = 128

# Maximum time one sigtimedwait call blocks, so deadlines are checked this often (seconds).
MAX_WAIT_SECONDS = 1.0
# How often the grace phase rescans /proc, because grandchildren whose parent still lives
# send no SIGCHLD to us when they exit (seconds).
DESCENDANT_POLL_SECONDS = 0.05
# How long to wait for processes killed with SIGKILL to disappear before exiting anyway.
# A process in uninterruptible sleep can take longer (seconds).
KILL_WAIT_SECONDS = 2.0

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}

# Signals the loop takes: every catchable one. SIGCHLD only wakes the reaper.
WAITED_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}


class Logger:
    """Writes ``secret-init: LEVEL message`` lines (or JSON lines) to stderr."""

    def __init__(self, level: int = 20, json_lines: bool = False) -> None:
        self.level = level
        self.json_lines = json_lines

    def log(self, level: str, message: str) -> None:
        if LEVELS[level] < self.level:
            return
        if self.json_lines:
            stamp = time.time()
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
            line = ('{"time": "%s.%03dZ", "level": "%s", "logger": "secret_init.supervisor", '
                    '"message": "%s"}' % (when, int(stamp % 1 * 1000), level.lower(),
                                          json_escape(message)))
        else:
            line = f"secret-init: {level} {message}"
        try:
            os.write(2, (line + "\n").encode("utf-8", "replace"))
        except OSError:
            pass  # stderr is closed or a broken pipe: nothing else can report it

    def debug(self, message: str) -> None:
        self.log("DEBUG", message)

    def info(self, message: str) -> None:
        self.log("INFO", message)

    def warning(self, message: str) -> None:
        self.log("WARNING", message)

    def error(self, message: str) -> None:
        self.log("ERROR", message)


def json_escape(text: str) -> str:
    """Escape ``text`` for a JSON string literal without importing json (which imports re)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20:
            out.append("\\u%04x" % ord(char))
        else:
            out.append(char)
    return "".join(out)


class Options:
    """The supervisor's command line, built by ``build_argv``."""

    def __init__(self) -> None:
        self.child = 0
        self.status_fd = -1
        self.name = "?"
        self.user = "?"
        self.kill_process_group = False
        self.stop_timeout = 10.0
        self.grace_period = 5.0
        self.remap_exit: dict[int, int] = {}
        self.cleanup_dir: str | None = None
        self.log_level = 20
        self.log_json = False


def build_argv(*, child: int, status_fd: int, name: str, user: str, kill_process_group: bool,
               stop_timeout: float, grace_period: float, remap_exit: dict[int, int],
               cleanup_dir: str | None, log_level: int, log_json: bool) -> list[str]:
    """Return the arguments for ``main``: the supervisor's command line after the bootstrap."""
    argv = ["--child", str(child), "--status-fd", str(status_fd), "--name", name,
            "--user", user, "--stop-timeout", repr(float(stop_timeout)),
            "--grace-period", repr(float(grace_period)), "--log-level", str(log_level)]
    if kill_process_group:
        argv.append("--kill-process-group")
    if log_json:
        argv.append("--log-json")
    for source, target in sorted(remap_exit.items()):
        argv += ["--remap-exit", f"{source}:{target}"]
    if cleanup_dir is not None:
        argv += ["--cleanup-dir", cleanup_dir]
    return argv


def parse_argv(argv: list[str]) -> Options:
    """Parse what ``build_argv`` wrote; raise ValueError on anything else."""
    options = Options()
    values = iter(argv)
    for flag in values:
        if flag == "--kill-process-group":
            options.kill_process_group = True
            continue
        if flag == "--log-json":
            options.log_json = True
            continue
        value = next(values, None)
        if value is None:
            raise ValueError(f"option {flag} needs a value")
        if flag == "--child":
            options.child = int(value)
        elif flag == "--status-fd":
            options.status_fd = int(value)
        elif flag == "--name":
            options.name = value
        elif flag == "--user":
            options.user = value
        elif flag == "--stop-timeout":
            options.stop_timeout = float(value)
        elif flag == "--grace-period":
            options.grace_period = float(value)
        elif flag == "--log-level":
            options.log_level = int(value)
        elif flag == "--remap-exit":
            source, _, target = value.partition(":")
            options.remap_exit[int(source)] = int(target)
        elif flag == "--cleanup-dir":
            options.cleanup_dir = value
        else:
            raise ValueError(f"unknown option {flag}")
    if options.child <= 0:
        raise ValueError("--child PID is required")
    return options


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code_of(status: int) -> int:
    """Return the shell's exit code for a wait status: the code, or 128+N for signal N."""
    if os.WIFSIGNALED(status):
        return EX_SIGNAL_BASE + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        return f"was killed by {signal_name(signum)} (exit code {EX_SIGNAL_BASE + signum})"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def read_start_report(fd: int) -> tuple[int, str] | None:
    """Read the forked child's report; return (exit code, message) if it failed to exec.

    The child has the pipe's write end with close-on-exec set, so EOF without data means
    execve succeeded. A child that fails writes ``CODE\\nmessage`` and exits. The read blocks
    while all signals stay blocked, so none is lost. The wait is short, because the child's
    work before execve is bounded (setpgid, tcsetpgrp, the privilege drop).
    """
    chunks = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    if not chunks:
        return None
    code_text, _, message = b"".join(chunks).decode("utf-8", "replace").partition("\n")
    try:
        code = int(code_text)
    except ValueError:
        return EX_SOFTWARE, f"the child sent an invalid start report: {code_text!r}"
    return code, message


def list_descendants(root: int) -> dict[int, str] | None:
    """Return {pid: command name} of the live descendants of ``root``, from /proc.

    Zombies are left out: their parent (us or another descendant) reaps them. Returns None
    when /proc cannot be read.
    """
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat_file:
                stat = stat_file.read().decode("utf-8", "replace")
        except OSError:
            continue  # the process exited while we listed /proc
        # The command name is in parentheses and may itself contain ")" or spaces.
        name_start, name_end = stat.find("("), stat.rfind(")")
        fields = stat[name_end + 2:].split()
        if len(fields) < 2 or fields[0] == "Z":
            continue
        pid = int(entry)
        names[pid] = stat[name_start + 1:name_end]
        children.setdefault(int(fields[1]), []).append(pid)
    found: dict[int, str] = {}
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        if pid in found:
            continue
        found[pid] = names[pid]
        pending.extend(children.get(pid, []))
    return found


def count_processes(processes: dict[int, str]) -> str:
    return "1 process" if len(processes) == 1 else f"{len(processes)} processes"


def describe_processes(processes: dict[int, str]) -> str:
    return ", ".join(f"{pid} ({name})" for pid, name in sorted(processes.items()))


def remove_tree_at(parent_fd: int, name: str) -> None:
    """Remove the directory ``name`` under ``parent_fd`` without ever following a symlink.

    Every step goes through a descriptor opened with O_NOFOLLOW, so an application that
    swaps a directory for a symlink mid-walk makes this fail instead of sending root into
    the link's target.
    """
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=parent_fd)
    try:
        with os.scandir(fd) as entries:
            names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for entry_name, is_dir in names:
            if is_dir:
                remove_tree_at(fd, entry_name)
            else:
                os.unlink(entry_name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


# The version directory names that secret-init's publish step creates:
# ..YYYY_MM_DD_HH_MM_SS.NANOSECONDS.PID
VERSION_NAME_PATTERN = r"\.\.\d{4}(_\d\d){5}\.\d{9}\.\d+"


def is_own_version_directory(directory_fd: int, name: str) -> bool:
    """Tell whether ``name`` is a version directory this process's user published.

    ``..data`` may have been rewritten by the application (a Kubernetes emptyDir is 0777),
    so its target is trusted only if it has the version name pattern and is a real
    directory owned by this user, which the application cannot create.
    """
    # Imported here: cleanup runs once at exit, and the waiting supervisor stays small.
    import re
    import stat

    if not re.fullmatch(VERSION_NAME_PATTERN, name):
        return False
    try:
        info = os.stat(name, dir_fd=directory_fd, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()


def remove_published_files(directory: str) -> int:
    """Remove the secret files published in ``directory``; return how many entries went.

    The layout is the Kubernetes one: ``..data`` links to a ``..<version>`` directory that
    contains the files, and each secret ``<name>`` links to ``..data/<name>``. Only what that
    layout names is removed: the name links, ``..data`` and the one version directory it
    points at. Other entries stay (the application may have put them there), and so does
    ``directory``, which is usually a mount point.
    """
    removed = 0
    directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with os.scandir(directory_fd) as scan:
            links = [entry.name for entry in scan if entry.is_symlink()]
        for name in links:
            target = os.readlink(name, dir_fd=directory_fd)
            if not name.startswith(".") and target.startswith("..data/"):
                os.unlink(name, dir_fd=directory_fd)
                removed += 1
        if "..data" in links:
            version = os.readlink("..data", dir_fd=directory_fd)
            os.unlink("..data", dir_fd=directory_fd)
            removed += 1
            if is_own_version_directory(directory_fd, version):
                remove_tree_at(directory_fd, version)
                removed += 1
    finally:
        os.close(directory_fd)
    return removed


class Supervisor:
    """The wait loop: forward signals to the child, reap, and run the stop and grace phases."""

    def __init__(self, options: Options, log: Logger) -> None:
        self.options = options
        self.log = log
        self.child = options.child
        self.child_status: int | None = None
        self.child_lost = False
        self.is_pid1 = os.getpid() == 1
        self.own_pid = os.getpid()
        # Monotonic time at which the child's group gets SIGKILL after a forwarded stop signal.
        self.kill_at: float | None = None

    def run(self) -> int:
        """Supervise until the child and its descendants are gone; return the exit code."""
        failure = read_start_report(self.options.status_fd)
        if failure is None:
            self.log.info(f"started {self.options.name} as pid {self.child}, "
                          f"user {self.options.user}")
        else:
            self.log.error(failure[1])

        while self.child_status is None and not self.child_lost:
            self.wait_and_forward()
            self.reap()
            self.enforce_stop_timeout()

        if failure is not None:
            code = failure[0]
        elif self.child_status is None:
            code = EX_SOFTWARE
        else:
            code = self.remapped(exit_code_of(self.child_status))
            self.log.info(f"{self.options.name} (pid {self.child}) "
                          f"{describe_status(self.child_status)}"
                          + (f", exiting with {code} after --remap-exit"
                             if code != exit_code_of(self.child_status) else ""))
        # Descendants stop first: they may still need the files to shut down, and once
        # they are gone none of them can race the removal.
        self.terminate_descendants()
        self.clean_up_files()
        return code

    def wait_and_forward(self) -> None:
        timeout = MAX_WAIT_SECONDS
        if self.kill_at is not None:
            timeout = max(0.0, min(timeout, self.kill_at - time.monotonic()))
        info = signal.sigtimedwait(WAITED_SIGNALS, timeout)
        if info is None or info.si_signo == signal.SIGCHLD:
            return
        self.forward(info.si_signo)
        if info.si_signo in (signal.SIGTERM, signal.SIGINT) and self.kill_at is None:
            self.kill_at = time.monotonic() + self.options.stop_timeout

    def forward(self, signum: int) -> None:
        if self.options.kill_process_group:
            target, target_kind = -self.child, "process group"
        else:
            target, target_kind = self.child, "pid"
        self.log.debug(f"forwarding {signal_name(signum)} to {target_kind} {self.child}")
        try:
            os.kill(target, signum)
        except ProcessLookupError:
            pass  # the child is exiting; the loop reaps it next
        except OSError as error:
            self.log.warning(f"could not forward {signal_name(signum)} to {target_kind} "
                             f"{self.child}: {error.strerror}")

    def reap(self) -> None:
        """Reap every exited child without blocking; remember the main child's status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                if self.child_status is None and not self.child_lost:
                    # Only when started by hand with a pid that is not our child.
                    self.child_lost = True
                    self.log.error(f"pid {self.child} is not a child of this process, so "
                                   "its exit code cannot be known")
                return
            if pid == 0:
                return
            if pid == self.child:
                self.child_status = status
            else:
                self.log.debug(f"reaped pid {pid}, which {describe_status(status)}")

    def enforce_stop_timeout(self) -> None:
        if self.kill_at is None or self.child_status is not None:
            return
        if time.monotonic() < self.kill_at:
            return
        self.log.warning(f"{self.options.name} (pid {self.child}) is still running "
                         f"{self.options.stop_timeout:g}s after the stop signal; "
                         "sending SIGKILL to its process group")
        self.kill_at = float("inf")
        for target in (-self.child, self.child):  # the child may have left its group
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass

    def remapped(self, code: int) -> int:
        return self.options.remap_exit.get(code, code)

    def clean_up_files(self) -> None:
        directory = self.options.cleanup_dir
        if directory is None:
            return
        try:
            removed = remove_published_files(directory)
        except OSError as error:
            self.log.error(f"could not remove the secret files in {directory}: "
                           f"{error.strerror} ({error.filename})")
            return
        self.log.info(f"removed the published secrets from {directory} ({removed} entries)")

    def terminate_descendants(self) -> None:
        """SIGTERM what is left after the main child, wait the grace period, SIGKILL the rest."""
        self.reap()
        remaining = self.remaining_descendants()
        if not remaining:
            return
        self.log.warning(
            f"{count_processes(remaining)} still running after {self.options.name} exited: "
            f"{describe_processes(remaining)}; sending SIGTERM, and SIGKILL after "
            f"{self.options.grace_period:g}s")
        self.signal_descendants(remaining, signal.SIGTERM)
        remaining = self.wait_for_descendants(self.options.grace_period)
        if not remaining:
            return
        self.log.warning(f"{count_processes(remaining)} did not exit within "
                         f"{self.options.grace_period:g}s of SIGTERM: "
                         f"{describe_processes(remaining)}; sending SIGKILL")
        self.signal_descendants(remaining, signal.SIGKILL)
        remaining = self.wait_for_descendants(KILL_WAIT_SECONDS)
        if remaining:
            self.log.warning(f"exiting while {count_processes(remaining)} killed with "
                             f"SIGKILL still exist: {describe_processes(remaining)}")

    def remaining_descendants(self) -> dict[int, str]:
        found = list_descendants(self.own_pid)
        if found is not None:
            return found
        # NOTE: without a readable /proc only our own unreaped children can be found, so
        # grandchildren whose parent still runs are missed unless we are PID 1.
        if self.is_pid1 and self.has_children():
            return {-1: "unknown: /proc is not readable"}
        return {}

    def has_children(self) -> bool:
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return True

    def signal_descendants(self, processes: dict[int, str], signum: int) -> None:
        # As PID 1, kill(-1) reaches every process in the PID namespace except us. Outside
        # PID 1 it would reach every process of the user on the host, so never use it there.
        targets = [-1] if self.is_pid1 else sorted(processes)
        for target in targets:
            try:
                os.kill(target, signum)
            except ProcessLookupError:
                pass
            except OSError as error:
                self.log.warning(f"could not send {signal_name(signum)} to pid {target}: "
                                 f"{error.strerror}")

    def wait_for_descendants(self, seconds: float) -> dict[int, str]:
        """Reap until no descendant is left or ``seconds`` pass; return those still alive."""
        deadline = time.monotonic() + seconds
        while True:
            self.reap()
            remaining = self.remaining_descendants()
            left = deadline - time.monotonic()
            if not remaining or left <= 0:
                return remaining
            # Signals other than SIGCHLD are dropped now: the main child is gone and the
            # rest are already being stopped.
            signal.sigtimedwait(WAITED_SIGNALS, min(left, DESCENDANT_POLL_SECONDS))


def main(argv: list[str]) -> int:
    """Run the supervisor with the options ``build_argv`` wrote; return the exit code."""
    # handover.py starts the supervisor with every signal blocked already, and blocking
    # again covers a start by hand. A blocked signal is queued even when its disposition is SIG_IGN.
    # NOTE: the interpreter sets SIGPIPE and SIGXFSZ to SIG_IGN while it starts, which drops
    # one of them that was already pending before execve.
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED_SIGNALS)
    try:
        options = parse_argv(argv)
    except ValueError as error:
        Logger().error(f"invalid supervisor command line: {error}")
        return EX_USAGE
    log = Logger(options.log_level, options.log_json)
    return Supervisor(options, log).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
