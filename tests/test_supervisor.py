"""Hand-over as PID 1 or subreaper: exit codes, signals, reaping, stop and grace phases.

Every test runs the real hand-over in a new PID namespace (see pidns.py) with small sh and
Python children, and skips only when the kernel refuses to create the namespace.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import stat
import subprocess
from collections import Counter
from pathlib import Path

import pytest

import pidns
from pidns import (PYTHON, Running, environment, handover_argv, namespace_argv, run_batch,
                   run_handover, unshare_refusal, wait_for)
from secret_init import errors, handover, supervisor

pytestmark = pytest.mark.skipif(unshare_refusal() is not None,
                                reason=f"no PID namespace: {unshare_refusal()}")

# A child that appends the name of each listed signal it receives to DIR/signals, writes
# DIR/ready once its handlers are set, and exits 0 when DIR/stop appears. On a terminal it
# writes to DIR/foreground whether its process group is the terminal's foreground group.
SIGNAL_COUNTER = r"""
import os, signal, sys, time
out, names = sys.argv[1], sys.argv[2].split(",")
if os.isatty(0):
    with open(os.path.join(out, "foreground"), "w") as foreground:
        foreground.write(str(os.tcgetpgrp(0) == os.getpgrp()))
def record(signum, frame):
    with open(os.path.join(out, "signals"), "a") as log:
        log.write(signal.Signals(signum).name + "\n")
for name in names:
    signal.signal(getattr(signal, name), record)
open(os.path.join(out, "ready"), "w").close()
while not os.path.exists(os.path.join(out, "stop")):
    time.sleep(0.01)
"""

# A child that double-forks 5 grandchildren, records their parent once the middle
# processes have exited, lets them exit, and prints which of them and which zombies are
# still in /proc after the supervisor had time to reap them.
ORPHAN_MAKER = r"""
import json, os, time
release_read, release_write = os.pipe()
grandchildren = []
for _ in range(5):
    pid_read, pid_write = os.pipe()
    middle = os.fork()
    if middle == 0:
        grandchild = os.fork()
        if grandchild == 0:
            os.close(release_write)
            os.read(release_read, 1)
            os._exit(0)
        os.write(pid_write, str(grandchild).encode())
        os._exit(0)
    os.close(pid_write)
    grandchildren.append(int(os.read(pid_read, 100)))
    os.waitpid(middle, 0)

def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as stat_file:
        return stat_file.read().rsplit(")", 1)[1].split()

parents = [int(stat_fields(pid)[1]) for pid in grandchildren]
os.close(release_write)
deadline = time.monotonic() + 30
while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in grandchildren):
    time.sleep(0.02)
zombies = []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            if stat_fields(entry)[0] == "Z":
                zombies.append(int(entry))
        except OSError:
            pass
print(json.dumps({"parents": parents, "supervisor": os.getppid(),
                  "left": [p for p in grandchildren if os.path.exists(f"/proc/{p}")],
                  "zombies": zombies}))
"""

# A child whose SIGTERM handler needs 3 s before it writes DIR/finished and exits 0.
SLOW_STOPPER = r"""
import os, signal, sys, time
out = sys.argv[1]
def on_term(signum, frame):
    time.sleep(3)
    open(os.path.join(out, "finished"), "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(os.path.join(out, "ready"), "w").close()
while True:
    time.sleep(1)
"""

# A child that starts a daemon (fork, setsid, fork) and exits 0 once the daemon runs. The
# daemon writes DIR/daemon-got-term on SIGTERM; with "ignore" it keeps running after that.
DAEMON_STARTER = r"""
import os, signal, sys, time
out, on_term = sys.argv[1], sys.argv[2]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        def record(signum, frame):
            open(os.path.join(out, "daemon-got-term"), "w").close()
            if on_term == "exit":
                os._exit(0)
        signal.signal(signal.SIGTERM, record)
        open(os.path.join(out, "daemon-ready"), "w").close()
        while True:
            time.sleep(1)
    os._exit(0)
while not os.path.exists(os.path.join(out, "daemon-ready")):
    time.sleep(0.01)
"""


def received_signals(directory: Path) -> list[str]:
    path = directory / "signals"
    return path.read_text().split() if path.exists() else []


def test_exit_codes_match_errors_module():
    assert supervisor.EX_SOFTWARE == errors.EX_SOFTWARE
    assert supervisor.EX_USAGE == errors.EX_USAGE
    assert supervisor.EX_SIGNAL_BASE == errors.EX_SIGNAL_BASE


def test_exit_codes_0_to_255_pass_through():
    jobs = [(["sh", "-c", f"exit {code}"], {}) for code in range(256)]
    results = run_batch(jobs, parallel=4)
    wrong = [(code, result[0]) for code, result in zip(range(256), results) if result[0] != code]
    assert wrong == [], "(expected, got) pairs"


@pytest.mark.parametrize("code", [0, 1, 2, 64, 126, 127, 128, 200, 255])
def test_exit_code_passes_through_as_pid1(code):
    result = run_handover(["sh", "-c", f"exit {code}"])
    assert result.returncode == code, result.stderr
    assert f"exited with code {code}" in result.stderr


@pytest.mark.parametrize("name, expected", [("TERM", 143), ("KILL", 137), ("SEGV", 139)])
def test_child_killed_by_signal_exits_128_plus_n(name, expected):
    result = run_handover(["sh", "-c", f"ulimit -c 0; kill -{name} $$"])
    assert result.returncode == expected, result.stderr
    assert f"was killed by SIG{name}" in result.stderr


@pytest.mark.parametrize("pid1", [True, False], ids=["pid1", "subreaper"])
def test_signals_reach_child_exactly_once(tmp_path, pid1):
    names = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH"]
    options = {"stop_timeout": 120} if pid1 else {"stop_timeout": 120, "mode": "init",
                                                   "subreaper": True}
    command = [PYTHON, "-c", SIGNAL_COUNTER, str(tmp_path), ",".join(names)]
    with Running(command, pid1=pid1, **options) as running:
        if pid1:
            target = running.supervisor_pid()
        else:
            init = running.init_pid()
            target = int(wait_for(
                lambda: Path(f"/proc/{init}/task/{init}/children").read_text().split(),
                30, "PID 1 to start the hand-over")[0])
        wait_for(lambda: (tmp_path / "ready").exists(), 30, "the child to set its handlers")
        for count, name in enumerate(names, start=1):
            os.kill(target, getattr(signal, name))
            wait_for(lambda: len(received_signals(tmp_path)) >= count, 30,
                     f"the child to receive {name}")
        (tmp_path / "stop").touch()
        result = running.wait()
    assert result.returncode == 0, result.stderr
    counts = Counter(received_signals(tmp_path))
    for name in names:
        assert counts[name] == 1, f"{name} received {counts[name]} times"


def test_process_group_forwarding_reaches_grandchild(tmp_path):
    script = 'trap "" USR1; "$0" -c "$1" "$2" SIGUSR1; exit $?'
    command = ["sh", "-c", script, PYTHON, SIGNAL_COUNTER, str(tmp_path)]
    with Running(command, kill_process_group=True) as running:
        target = running.supervisor_pid()
        wait_for(lambda: (tmp_path / "ready").exists(), 30, "the grandchild to set its handler")
        os.kill(target, signal.SIGUSR1)
        wait_for(lambda: received_signals(tmp_path), 30, "the grandchild to receive SIGUSR1")
        (tmp_path / "stop").touch()
        result = running.wait()
    assert result.returncode == 0, result.stderr
    assert received_signals(tmp_path) == ["SIGUSR1"]


def test_background_job_never_loses_status():
    jobs = [(["sh", "-c", "sleep 0.01 & exit 7"], {"grace_period": 5})] * 500
    results = run_batch(jobs, parallel=4)
    codes = Counter(code for code, _ in results)
    assert codes == {7: 500}, [stderr for code, stderr in results if code != 7][:3]


@pytest.mark.parametrize("pid1", [True, False], ids=["pid1", "subreaper"])
def test_orphaned_grandchildren_are_reaped(pid1):
    options = {} if pid1 else {"mode": "init", "subreaper": True}
    result = run_handover([PYTHON, "-c", ORPHAN_MAKER], pid1=pid1, **options)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    if pid1:
        assert report["supervisor"] == 1
    assert report["parents"] == [report["supervisor"]] * 5, "orphans were not reparented to us"
    assert report["left"] == []
    assert report["zombies"] == []


def test_slow_term_handler_finishes(tmp_path):
    with Running([PYTHON, "-c", SLOW_STOPPER, str(tmp_path)]) as running:
        target = running.supervisor_pid()
        wait_for(lambda: (tmp_path / "ready").exists(), 30, "the child to set its handler")
        os.kill(target, signal.SIGTERM)
        result = running.wait()
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "finished").exists()
    assert "SIGKILL" not in result.stderr


def test_group_ignoring_term_is_killed_at_stop_timeout(tmp_path):
    ready = tmp_path / "ready"
    script = f'trap "" TERM; sleep 600 & touch {ready}; wait'
    with Running(["sh", "-c", script], kill_process_group=True, stop_timeout=1) as running:
        target = running.supervisor_pid()
        wait_for(ready.exists, 30, "the shell to start its background sleep")
        os.kill(target, signal.SIGTERM)
        result = running.wait(timeout=60)
    assert result.returncode == 137, result.stderr
    assert "still running 1s after the stop signal; sending SIGKILL" in result.stderr


@pytest.mark.parametrize("pid1", [True, False], ids=["pid1", "subreaper"])
def test_daemon_left_behind_gets_term_then_kill(tmp_path, pid1):
    options = {"grace_period": 1}
    if not pid1:
        options.update(mode="init", subreaper=True)
    result = run_handover([PYTHON, "-c", DAEMON_STARTER, str(tmp_path), "ignore"], pid1=pid1,
                          timeout=60, **options)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "daemon-got-term").exists()
    assert "1 process still running after" in result.stderr
    assert "did not exit within 1s of SIGTERM" in result.stderr


def test_daemon_exiting_on_term_needs_no_kill(tmp_path):
    result = run_handover([PYTHON, "-c", DAEMON_STARTER, str(tmp_path), "exit"],
                          grace_period=30)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "daemon-got-term").exists()
    assert "sending SIGTERM" in result.stderr
    assert "sending SIGKILL" not in result.stderr


def test_ctrl_c_on_terminal_reaches_child_once(tmp_path):
    command = [PYTHON, "-c", SIGNAL_COUNTER, str(tmp_path), "SIGINT"]
    argv = namespace_argv(handover_argv(command, stop_timeout=120))
    pid, master = pty.fork()
    if pid == 0:
        try:
            os.chdir(Path(__file__).resolve().parents[1])
            os.execvpe(argv[0], argv, environment())
        finally:
            os._exit(127)
    output = b""
    try:
        wait_for(lambda: (tmp_path / "ready").exists(), 30, "the child to set its handler")
        os.write(master, b"\x03")
        wait_for(lambda: received_signals(tmp_path), 30, "the child to receive SIGINT")
        (tmp_path / "stop").touch()
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO once every process closed the terminal
                break
            if not chunk:
                break
            output += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")
    assert (tmp_path / "foreground").read_text() == "True"
    assert received_signals(tmp_path) == ["SIGINT"]


def test_remap_exit_applies_to_listed_codes():
    remap = {3: 0, 143: 1}
    assert run_handover(["sh", "-c", "exit 3"], remap_exit=remap).returncode == 0
    assert run_handover(["sh", "-c", "exit 4"], remap_exit=remap).returncode == 4
    killed = run_handover(["sh", "-c", "kill -TERM $$"], remap_exit=remap)
    assert killed.returncode == 1
    assert "exiting with 1 after --remap-exit" in killed.stderr


def test_remap_exit_keeps_command_not_found():
    result = run_handover(["no-such-command-for-secret-init"], remap_exit={127: 0})
    assert result.returncode == 127


MODES = [pytest.param({}, id="pid1"), pytest.param({"mode": "init", "subreaper": True},
                                                   id="subreaper"),
         pytest.param({"mode": "exec"}, id="exec")]


@pytest.mark.parametrize("options", MODES)
def test_command_not_found_exits_127(options):
    result = run_handover(["no-such-command-for-secret-init"], **options)
    assert result.returncode == 127
    assert "command 'no-such-command-for-secret-init' not found" in result.stderr


@pytest.mark.parametrize("options", MODES)
def test_command_not_executable_exits_126(tmp_path, options):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    result = run_handover([str(script)], **options)
    assert result.returncode == 126
    assert f"command '{script}'" in result.stderr
    assert "not executable" in result.stderr


@pytest.mark.parametrize("options", MODES)
def test_missing_interpreter_at_execve_exits_127(tmp_path, options):
    script = tmp_path / "script"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    result = run_handover([str(script)], **options)
    assert result.returncode == 127, result.stderr
    assert f"command '{script}' not found" in result.stderr


@pytest.mark.parametrize("options", MODES)
def test_unknown_binary_format_at_execve_exits_126(tmp_path, options):
    binary = tmp_path / "binary"
    binary.write_bytes(b"\x00\x01\x02\x03 not a program")
    binary.chmod(0o755)
    result = run_handover([str(binary)], **options)
    assert result.returncode == 126, result.stderr
    assert f"command '{binary}' could not be executed: Exec format error" in result.stderr


def make_published_dir(directory: Path) -> None:
    """Lay out secret files as the publisher does: name -> ..data/name, ..data -> ..v1."""
    directory.mkdir()
    version = directory / "..2024_01_01_00_00_00.000000001.7"
    version.mkdir()
    (version / "db-password").write_text("hunter2\n")
    (version / "nested").mkdir()
    (version / "nested" / "token").write_text("abc\n")
    (directory / "..data").symlink_to(version.name)
    (directory / "db-password").symlink_to("..data/db-password")
    (directory / "nested").symlink_to("..data/nested")
    (directory / "unrelated.txt").write_text("not a secret\n")


@pytest.mark.parametrize("command", [["cat", "db-password"], ["sh", "-c", "kill -TERM $$"]],
                         ids=["exit", "signal"])
def test_cleanup_dir_removes_files_on_exit(tmp_path, command):
    out = tmp_path / "out"
    make_published_dir(out)
    command = [command[0], *(str(out / arg) if arg == "db-password" else arg
                             for arg in command[1:])]
    result = run_handover(command, cleanup_dir=str(out))
    assert result.returncode in (0, 143), result.stderr
    assert out.is_dir()
    assert sorted(os.listdir(out)) == ["unrelated.txt"]
    if command[0] == "cat":
        assert result.stdout == "hunter2\n"


def test_cleanup_dir_ignored_in_exec_mode(tmp_path):
    out = tmp_path / "out"
    make_published_dir(out)
    result = run_handover(["true"], mode="exec", cleanup_dir=str(out))
    assert result.returncode == 0, result.stderr
    assert "will not be removed when the command exits" in result.stderr
    assert (out / "db-password").read_text() == "hunter2\n"


def test_supervising_below_pid1_without_subreaper_warns():
    result = run_handover(["true"], pid1=False, mode="init")
    assert result.returncode == 0, result.stderr
    assert "supervising without being PID 1 or a child subreaper" in result.stderr


def test_subreaper_below_pid1_does_not_warn():
    result = run_handover(["true"], pid1=False, mode="init", subreaper=True)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr


def test_auto_mode_below_pid1_execs():
    result = run_handover(["sh", "-c", "echo $$; exit 5"], pid1=False)
    assert result.returncode == 5, result.stderr
    assert "replacing secret-init" in result.stderr
    assert "started sh as pid" not in result.stderr


def test_supervisor_runs_without_environment(tmp_path):
    ready = tmp_path / "ready"
    with Running(["sh", "-c", f"touch {ready}; exec sleep 600"]) as running:
        target = running.supervisor_pid()
        wait_for(ready.exists, 30, "the child to start")
        environ = Path(f"/proc/{target}/environ").read_bytes()
        cmdline = Path(f"/proc/{target}/cmdline").read_bytes().split(b"\0")
        os.kill(target, signal.SIGTERM)
        result = running.wait()
    assert environ == b""
    assert cmdline[1:3] == [b"-I", b"-S"]
    assert result.returncode == 143, result.stderr


def test_child_starts_with_default_signal_state(tmp_path):
    script = "grep -E '^(SigBlk|SigIgn):' /proc/self/status"
    result = run_handover(["sh", "-c", script])
    assert result.returncode == 0, result.stderr
    masks = dict(line.split(":\t") for line in result.stdout.splitlines())
    assert int(masks["SigBlk"], 16) == 0
    assert int(masks["SigIgn"], 16) == 0


def test_supervises_in_process_when_python_cannot_be_started():
    script = pidns.HANDOVER_SCRIPT.replace("from secret_init.errors",
                                           "sys.executable = '/no/such/python'\n"
                                           "from secret_init.errors")
    job = json.dumps({"command": ["sh", "-c", "exit 9"], "options": {}})
    result = subprocess.run(namespace_argv([PYTHON, "-c", script, job]), capture_output=True,
                            text=True, timeout=60, env=environment())
    assert result.returncode == 9, result.stderr
    assert "could not start the separate supervisor (/no/such/python" in result.stderr
    assert "exited with code 9" in result.stderr


def test_supervisor_imports_only_standard_modules():
    # The supervisor's bootstrap, asked which modules it loaded, instead of calling main.
    bootstrap = handover.supervisor_command(PYTHON)[-1].replace(
        "from secret_init.supervisor import main; sys.exit(main(sys.argv[1:]))",
        "import secret_init.supervisor; print(' '.join(sorted(sys.modules)))")
    result = subprocess.run([PYTHON, "-I", "-S", "-c", bootstrap], capture_output=True,
                            text=True, timeout=60, env={})
    assert result.returncode == 0, result.stderr
    modules = set(result.stdout.split())
    assert {"secret_init", "secret_init.supervisor"} <= modules
    assert {m for m in modules if m.startswith("secret_init")} == {"secret_init",
                                                                  "secret_init.supervisor"}
    assert not modules & {"logging", "json", "re", "site", "yaml", "hvac", "boto3", "botocore"}


def test_supervisor_rejects_unknown_option(capfd):
    assert supervisor.main(["--child", "5", "--bogus", "1"]) == errors.EX_USAGE
    assert "unknown option --bogus" in capfd.readouterr().err


def test_remove_published_files_keeps_other_entries(tmp_path):
    out = tmp_path / "out"
    make_published_dir(out)
    (out / "elsewhere").symlink_to("/etc/hostname")
    assert supervisor.remove_published_files(str(out)) == 4
    assert sorted(os.listdir(out)) == ["elsewhere", "unrelated.txt"]
    assert stat.S_ISDIR(out.stat().st_mode)


def test_cleanup_never_leaves_output_dir(tmp_path):
    from secret_init.supervisor import remove_published_files

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "shadow").write_text("root only")
    output = tmp_path / "out"
    version = output / "..2026_01_01_00_00_00.000000001.1"
    version.mkdir(parents=True)
    (version / "db_password").write_text("pw")
    (version / "planted").symlink_to(victim)  # the application swapped a folder for a link
    (output / "..data").symlink_to(version.name)
    (output / "db_password").symlink_to("..data/db_password")
    (output / "..app-owned").mkdir()  # not part of the layout: the application's own
    (output / "notes").symlink_to(victim / "shadow")

    remove_published_files(str(output))

    assert (victim / "shadow").read_text() == "root only"
    assert sorted(os.listdir(output)) == ["..app-owned", "notes"]


def test_cleanup_refuses_version_dir_swapped_for_link(tmp_path):
    from secret_init.supervisor import remove_published_files

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    output = tmp_path / "out"
    output.mkdir()
    (output / "..2026_01_01_00_00_00.000000001.1").symlink_to(victim)
    (output / "..data").symlink_to("..2026_01_01_00_00_00.000000001.1")

    remove_published_files(str(output))

    assert (victim / "keep").read_text() == "x"


@pytest.mark.parametrize("target", ["..", ".", "..2026_01_01_00_00_00.000000001.1",
                                    "..app-made"])
def test_cleanup_ignores_rewritten_data_link(tmp_path, target):
    from secret_init.supervisor import remove_published_files

    parent = tmp_path / "parent"
    output = parent / "secrets"
    output.mkdir(parents=True)
    (parent / "victim").write_text("keep")
    if target.startswith("..2") or target == "..app-made":
        # A directory with a version-like name that the application, not root, owns.
        (output / target).mkdir()
        (output / target / "file").write_text("keep")
        os.chown(output / target, 10001, 10001)
    (output / "..data").symlink_to(target)

    remove_published_files(str(output))

    assert (parent / "victim").read_text() == "keep"
    assert output.is_dir()
    if target.startswith("..2") or target == "..app-made":
        assert (output / target / "file").read_text() == "keep"


def test_cleanup_removes_own_version_directory(tmp_path):
    from secret_init.supervisor import remove_published_files

    version = "..2026_01_01_00_00_00.000000001.1"
    (tmp_path / version).mkdir()
    (tmp_path / version / "a").write_text("secret")
    (tmp_path / "..data").symlink_to(version)
    (tmp_path / "a").symlink_to("..data/a")

    assert remove_published_files(str(tmp_path)) == 3
    assert os.listdir(tmp_path) == []
