"""Run secret-init's hand-over inside a fresh PID namespace, as PID 1 or below it.

Every run goes through ``unshare --pid --fork --mount --mount-proc --kill-child``, so /proc
shows the process under test only the namespace's processes, a stray process dies with the
namespace, and signals sent by a test cannot reach the host's processes.

Run as a script (``python pidns.py batch``), this file drives many hand-overs in one
namespace. It reads jobs as JSON on stdin and forks one process per job that calls
``hand_over`` in init mode. Then it prints each job's exit code and stderr as JSON.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# The hand-over as the lead's CLI calls it: logs as text on stderr at INFO, and an error
# raised before the command starts becomes its message and exit code.
HANDOVER_SCRIPT = """
import json, logging, os, sys
logging.basicConfig(level=logging.INFO, format="secret-init: %(levelname)s %(message)s")
from secret_init.errors import SecretInitError
from secret_init.handover import HandOverOptions, hand_over
job = json.loads(sys.argv[1])
options = job["options"]
options["remap_exit"] = {int(k): v for k, v in options.get("remap_exit", {}).items()}
try:
    hand_over(job["command"], dict(os.environ), HandOverOptions(**options))
except SecretInitError as error:
    print(f"secret-init: ERROR {error}", file=sys.stderr)
    sys.exit(error.exit_code)
"""


@functools.lru_cache(maxsize=None)
def unshare_refusal(user_namespace: bool = False) -> str | None:
    """Return why the kernel refuses a PID namespace here, or None when it allows one."""
    try:
        result = subprocess.run(namespace_argv(["true"], user_namespace=user_namespace),
                                capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return "the unshare command is not installed"
    if result.returncode != 0:
        return f"unshare failed: {result.stderr.strip()}"
    return None


def namespace_argv(argv: list[str], *, user_namespace: bool = False) -> list[str]:
    """Return ``argv`` prefixed to run as PID 1 of a new PID (and mount) namespace."""
    prefix = ["unshare"]
    if user_namespace:
        # Maps only uid 0 and denies setgroups, so any switch to another user fails.
        prefix += ["--user", "--map-root-user"]
    return prefix + ["--pid", "--fork", "--mount", "--mount-proc", "--kill-child", "--", *argv]


def handover_argv(command: list[str], **options) -> list[str]:
    """Return a Python command line that calls ``hand_over(command, os.environ, options)``."""
    return [PYTHON, "-c", HANDOVER_SCRIPT, json.dumps({"command": command, "options": options})]


def below_init(argv: list[str]) -> list[str]:
    """Return ``argv`` run by a shell that stays PID 1, so ``argv`` itself is not PID 1."""
    return ["sh", "-c", '"$@"; exit $?', "sh", *argv]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    return env


def run_handover(command: list[str], *, pid1: bool = True, user_namespace: bool = False,
                 timeout: float = 60, wrap: list[str] | None = None,
                 **options) -> subprocess.CompletedProcess:
    """Run the hand-over in a new PID namespace and wait for it; return the finished process.

    ``pid1=False`` runs it below a shell that is PID 1. ``wrap`` is a shell command line
    run as PID 1 first (such as bind mounts), which must end in ``exec "$@"``.
    """
    argv = handover_argv(command, **options)
    if not pid1:
        argv = below_init(argv)
    if wrap is not None:
        argv = ["sh", "-c", wrap, "sh", *argv]
    return subprocess.run(namespace_argv(argv, user_namespace=user_namespace),
                          capture_output=True, text=True, timeout=timeout, env=environment(),
                          cwd=REPO)


class Running:
    """A hand-over started in a new PID namespace, to signal while it runs."""

    def __init__(self, command: list[str], *, pid1: bool = True, **options) -> None:
        argv = handover_argv(command, **options)
        if not pid1:
            argv = below_init(argv)
        self.process = subprocess.Popen(namespace_argv(argv), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=environment(),
                                        cwd=REPO)

    def init_pid(self, timeout: float = 30) -> int:
        """Return the host pid of the namespace's PID 1, the process unshare forked."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return int(wait_for(lambda: children.read_text().split(), timeout,
                            "unshare to fork PID 1")[0])

    def supervisor_pid(self, timeout: float = 30) -> int:
        """Return the host pid of the supervisor once PID 1 has exec'd into it."""
        pid = self.init_pid(timeout)
        cmdline = Path(f"/proc/{pid}/cmdline")
        wait_for(lambda: b"secret_init.supervisor" in cmdline.read_bytes(), timeout,
                 "PID 1 to exec the supervisor")
        return pid

    def wait(self, timeout: float = 60) -> subprocess.CompletedProcess:
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
            raise AssertionError(f"the hand-over did not finish within {timeout}s; "
                                 f"stderr: {stderr}") from None
        return subprocess.CompletedProcess(self.process.args, self.process.returncode,
                                           stdout, stderr)

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def wait_for(condition, timeout: float, description: str):
    """Poll ``condition`` until it returns a true value; raise AssertionError after ``timeout``.

    The timeout only bounds a hang. It is not a speed assertion, so keep it generous.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (OSError, ValueError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {description}")
        time.sleep(0.02)


def run_batch(jobs: list[tuple[list[str], dict]], *, parallel: int = 4,
              timeout: float = 300) -> list[tuple[int, str]]:
    """Run many hand-overs in init mode in one namespace; return (exit code, stderr) each.

    Each job is (command, HandOverOptions fields). Runs ``parallel`` at a time, each below
    the driver, which is PID 1, so each hand-over supervises as a child subreaper.
    """
    payload = json.dumps({"jobs": jobs, "parallel": parallel})
    result = subprocess.run(namespace_argv([PYTHON, str(Path(__file__).resolve()), "batch"]),
                            input=payload, capture_output=True, text=True, timeout=timeout,
                            env=environment(), cwd=REPO)
    if result.returncode != 0:
        raise AssertionError(f"the batch driver failed with {result.returncode}: {result.stderr}")
    return [tuple(item) for item in json.loads(result.stdout)]


def run_batch_driver() -> None:
    """Fork one hand-over per job from stdin, ``parallel`` at a time; print the results."""
    import logging

    from secret_init.errors import SecretInitError
    from secret_init.handover import HandOverOptions, hand_over

    logging.basicConfig(level=logging.INFO, format="secret-init: %(levelname)s %(message)s")
    request = json.load(sys.stdin)
    jobs = request["jobs"]
    results: list[list] = [[None, ""] for _ in jobs]
    running: dict[int, tuple[int, str]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        next_job = 0
        while next_job < len(jobs) or running:
            while next_job < len(jobs) and len(running) < request["parallel"]:
                stderr_path = os.path.join(scratch, f"{next_job}.stderr")
                pid = os.fork()
                if pid == 0:
                    run_job(jobs[next_job], stderr_path, hand_over, HandOverOptions,
                            SecretInitError)
                running[pid] = (next_job, stderr_path)
                next_job += 1
            # The one wait of the driver: the hand-overs' own orphans are reparented to the
            # hand-overs (child subreapers), and whatever outlives them comes here.
            pid, status = os.wait()
            if pid not in running:
                continue
            index, stderr_path = running.pop(pid)
            with open(stderr_path) as stderr_file:
                results[index] = [os.waitstatus_to_exitcode(status), stderr_file.read()]
    json.dump(results, sys.stdout)


def run_job(job, stderr_path, hand_over, options_class, error_class) -> None:
    """In a forked driver child: redirect output and hand over; never returns."""
    command, options = job
    code = 70
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        stderr = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(stderr, 2)
        options = dict(options, mode="init", subreaper=True)
        options["remap_exit"] = {int(k): v for k, v in options.get("remap_exit", {}).items()}
        hand_over(command, dict(os.environ), options_class(**options))
    except error_class as error:
        os.write(2, f"secret-init: ERROR {error}\n".encode())
        code = error.exit_code
    finally:
        os._exit(code)


if __name__ == "__main__" and sys.argv[1:] == ["batch"]:
    run_batch_driver()
