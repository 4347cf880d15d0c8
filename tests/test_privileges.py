"""The switch to the application's user before the command starts, in both hand-over modes.

The tests run in a new PID and mount namespace where /etc/passwd and /etc/group are bind
mounts of test files, so the user and its supplementary groups exist only there.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from pidns import PYTHON, REPO, environment, namespace_argv, run_handover, unshare_refusal

pytestmark = pytest.mark.skipif(unshare_refusal() is not None,
                                reason=f"no PID namespace: {unshare_refusal()}")

APP_UID = 4242
EXTRA_GIDS = (5001, 5002)
APP_HOME = "/home/appuser"

MODES = [pytest.param({}, id="pid1"), pytest.param({"mode": "exec"}, id="exec")]


@pytest.fixture(scope="module")
def accounts():
    """Write passwd and group files that add appuser (4242) with two supplementary groups.

    The files live in a world-readable directory under /tmp, next to a root-only 0400 secret
    and a 0444 control file, so appuser's access depends only on each file's own mode.
    """
    directory = Path(tempfile.mkdtemp(prefix="secret-init-privileges-", dir="/tmp"))
    directory.chmod(0o755)
    passwd = directory / "passwd"
    passwd.write_text(Path("/etc/passwd").read_text()
                      + f"appuser:x:{APP_UID}:{APP_UID}::{APP_HOME}:/bin/sh\n")
    group = directory / "group"
    group.write_text(Path("/etc/group").read_text()
                     + f"appuser:x:{APP_UID}:\n"
                     + "".join(f"extra{gid}:x:{gid}:appuser\n" for gid in EXTRA_GIDS))
    secret = directory / "secret"
    secret.write_text("root only\n")
    secret.chmod(0o400)
    control = directory / "control"
    control.write_text("anyone\n")
    control.chmod(0o444)
    yield directory
    shutil.rmtree(directory)


def bind_accounts(directory: Path) -> str:
    return (f"mount --bind {shlex.quote(str(directory / 'passwd'))} /etc/passwd && "
            f"mount --bind {shlex.quote(str(directory / 'group'))} /etc/group && "
            'exec "$@"')


def identity_script(directory: Path) -> str:
    """Return a shell script that prints the process's ids, HOME and what it can read."""
    return (
        "grep -E '^(Uid|Gid|Groups|CapPrm|CapEff):' /proc/self/status; "
        'echo "HOME:	$HOME"; '
        f"if cat {shlex.quote(str(directory / 'secret'))} >/dev/null 2>&1; "
        'then echo "secret:	read"; else echo "secret:	denied"; fi; '
        f"if cat {shlex.quote(str(directory / 'control'))} >/dev/null 2>&1; "
        'then echo "control:	read"; else echo "control:	denied"; fi')


def parse_identity(stdout: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in stdout.splitlines() if ":\t" in line)


@pytest.mark.parametrize("options", MODES)
def test_command_runs_as_user_with_its_groups(accounts, options):
    result = run_handover(["sh", "-c", identity_script(accounts)], user="appuser",
                          wrap=bind_accounts(accounts), **options)
    assert result.returncode == 0, result.stderr
    identity = parse_identity(result.stdout)
    assert [int(uid) for uid in identity["Uid"].split()] == [APP_UID] * 4  # real, eff, saved, fs
    assert [int(gid) for gid in identity["Gid"].split()] == [APP_UID] * 4
    assert {int(gid) for gid in identity["Groups"].split()} == {APP_UID, *EXTRA_GIDS}
    assert int(identity["CapPrm"], 16) == 0
    assert int(identity["CapEff"], 16) == 0
    assert identity["HOME"] == APP_HOME
    assert identity["secret"] == "denied"
    assert identity["control"] == "read"


@pytest.mark.parametrize("options", MODES)
def test_numeric_user_without_passwd_entry(accounts, options):
    result = run_handover(["sh", "-c", identity_script(accounts)], user="31337:31338",
                          **options)
    assert result.returncode == 0, result.stderr
    identity = parse_identity(result.stdout)
    assert [int(uid) for uid in identity["Uid"].split()] == [31337] * 4
    assert [int(gid) for gid in identity["Gid"].split()] == [31338] * 4
    assert identity["Groups"].split() == ["31338"]
    assert identity["HOME"] == "/"
    assert identity["secret"] == "denied"


def test_supervisor_logs_the_user(accounts):
    result = run_handover(["true"], user="appuser", wrap=bind_accounts(accounts))
    assert result.returncode == 0, result.stderr
    assert f"user appuser (uid {APP_UID}, gid {APP_UID})" in result.stderr


@pytest.mark.parametrize("options", MODES)
def test_failed_switch_refuses_to_start_command(options):
    # A user namespace that maps only uid 0 denies setgroups, so the switch fails.
    if unshare_refusal(user_namespace=True) is not None:
        pytest.skip(f"no user namespace: {unshare_refusal(user_namespace=True)}")
    result = run_handover(["sh", "-c", "echo STARTED"], user="4242:4242", user_namespace=True,
                          **options)
    assert result.returncode == 77, result.stderr
    assert "STARTED" not in result.stdout
    assert "cannot switch to user 4242 (uid 4242, gid 4242): setgroups failed" in result.stderr


def test_verification_catches_a_switch_that_did_not_happen():
    # setuid replaced by a no-op: every call succeeds, and only the check afterwards can
    # see that the uid is still 0.
    script = (
        "import os, sys\n"
        "from secret_init.errors import PrivilegeDropError\n"
        "from secret_init.privileges import drop_privileges\n"
        "from secret_init.users import Account\n"
        "os.setuid = lambda uid: None\n"
        "try:\n"
        "    drop_privileges(Account(4242, 4242, (4242,), None, '/'))\n"
        "except PrivilegeDropError as error:\n"
        "    print(error)\n"
        "    sys.exit(error.exit_code)\n")
    result = subprocess.run(namespace_argv([PYTHON, "-c", script]), capture_output=True,
                            text=True, timeout=60, env=environment(), cwd=REPO)
    assert result.returncode == 77, result.stderr
    assert "uids are (0, 0, 0) after setuid" in result.stdout


def test_setuid_back_to_root_must_fail():
    # A process that keeps CAP_SETUID (SECBIT_KEEP_CAPS and the capability re-raised) can
    # setuid(0) again after the switch, and the check must notice.
    script = (
        "import ctypes, os, sys\n"
        "from secret_init.errors import PrivilegeDropError\n"
        "from secret_init.privileges import verify_dropped\n"
        "from secret_init.users import Account\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "PR_SET_SECUREBITS, SECBIT_KEEP_CAPS = 28, 1 << 4\n"
        "assert libc.prctl(PR_SET_SECUREBITS, SECBIT_KEEP_CAPS, 0, 0, 0) == 0\n"
        "os.setgroups([4242]); os.setresgid(4242, 4242, 4242)\n"
        "os.setresuid(4242, 4242, 4242)\n"
        "class Header(ctypes.Structure):\n"
        "    _fields_ = [('version', ctypes.c_uint32), ('pid', ctypes.c_int)]\n"
        "class Data(ctypes.Structure):\n"
        "    _fields_ = [('effective', ctypes.c_uint32), ('permitted', ctypes.c_uint32),\n"
        "                ('inheritable', ctypes.c_uint32)]\n"
        "header = Header(0x20080522, 0)\n"
        "data = (Data * 2)()\n"
        "assert libc.capget(ctypes.byref(header), data) == 0\n"
        "data[0].effective = data[0].permitted\n"
        "assert libc.capset(ctypes.byref(header), data) == 0\n"
        "try:\n"
        "    verify_dropped(Account(4242, 4242, (4242,), None, '/'))\n"
        "except PrivilegeDropError as error:\n"
        "    print(error)\n"
        "    sys.exit(error.exit_code)\n")
    result = subprocess.run(namespace_argv([PYTHON, "-c", script]), capture_output=True,
                            text=True, timeout=60, env=environment(), cwd=REPO)
    assert result.returncode == 77, result.stderr
    assert "setuid(0) still succeeds" in result.stdout
