"""End-to-end runs of the real pipeline on a real tmpfs in a private mount namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from namespaces import in_tmpfs_namespace, require_mount_namespace

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent

# The child prints the files it can read, as JSON, so the test can check modes and owners.
INSPECT_CHILD = textwrap.dedent("""
    import json, os, sys
    directory = sys.argv[1]
    report = {"files": {}, "env": {k: v for k, v in os.environ.items() if k.startswith("APP_")}}
    for name in sorted(os.listdir(directory)):
        if name.startswith(".."):
            continue
        path = os.path.join(directory, name)
        info = os.stat(path)
        with open(path, "rb") as stream:
            content = stream.read().decode()
        report["files"][name] = {"mode": oct(info.st_mode & 0o7777), "uid": info.st_uid,
                                 "gid": info.st_gid, "content": content}
    print(json.dumps(report))
""")


def write_manifest(tmp_path: Path, body: str) -> Path:
    (tmp_path / "dev.yaml").write_text(textwrap.dedent("""
        database: {password: s3cret-db}
        api: {token: tok-123}
        tls.key: "-----BEGIN KEY-----"
    """))
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(textwrap.dedent(body))
    return manifest


def run_in_tmpfs(manifest: Path, child: list[str], *, extra: str = "", env=None,
                 mount_point: str = "/run/secrets") -> subprocess.CompletedProcess:
    command = " ".join(f"'{part}'" for part in
                       [PYTHON, "-m", "secret_init", "-f", str(manifest), "--", *child])
    return subprocess.run(in_tmpfs_namespace(f"{extra}\nexec {command}", mount_point=mount_point),
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)


MANIFEST = """
    version: 1
    output: {dir: /run/secrets, mode: "0400", owner: "10001:10001"}
    backends:
      dev: {type: file, path: ./dev.yaml}
    secrets:
      db_password: {from: dev, key: database.password}
      api_token: {from: dev, key: api.token, env: APP_TOKEN}
      tls.key: {from: dev, key: ["tls.key"], mode: "0440", group: "2000"}
      app.env:
        template: "DATABASE_URL=postgres://web:${db_password}@db/web\\n"
        env_file: APP_ENV_FILE
"""


def test_run_writes_files_on_tmpfs_and_execs_child(tmp_path):
    require_mount_namespace()
    manifest = write_manifest(tmp_path, MANIFEST)
    (tmp_path / "inspect.py").write_text(INSPECT_CHILD)

    result = run_in_tmpfs(manifest, [PYTHON, str(tmp_path / "inspect.py"), "/run/secrets"])

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    files = report["files"]
    assert files["db_password"] == {"mode": "0o400", "uid": 10001, "gid": 10001, "content": "s3cret-db"}
    assert files["api_token"]["content"] == "tok-123"
    assert files["tls.key"]["mode"] == "0o440"
    assert files["tls.key"]["gid"] == 2000
    assert files["app.env"]["content"] == "DATABASE_URL=postgres://web:s3cret-db@db/web\n"
    assert report["env"] == {"APP_TOKEN": "tok-123", "APP_ENV_FILE": "/run/secrets/app.env"}
    assert "s3cret-db" not in result.stderr


def test_run_refuses_disk_output_without_allow_disk(tmp_path):
    manifest = write_manifest(tmp_path, MANIFEST.replace("/run/secrets", str(tmp_path / "out")))
    result = subprocess.run([PYTHON, "-m", "secret_init", "-f", str(manifest), "--", "true"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 78
    assert "not tmpfs" in result.stderr
    assert "--tmpfs" in result.stderr
    assert "medium: Memory" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_second_uid_cannot_read_0400_file(tmp_path):
    require_mount_namespace()
    manifest = write_manifest(tmp_path, MANIFEST)
    reader = textwrap.dedent("""
        import os, sys
        results = []
        for uid in (10001, 10002):
            pid = os.fork()
            if pid == 0:
                os.setgroups([]); os.setgid(uid); os.setuid(uid)
                try:
                    open("/run/secrets/db_password").read()
                    os._exit(0)
                except PermissionError:
                    os._exit(13)
            _, status = os.waitpid(pid, 0)
            results.append(f"{uid}:{os.waitstatus_to_exitcode(status)}")
        print(" ".join(results))
    """)
    (tmp_path / "reader.py").write_text(reader)

    result = run_in_tmpfs(manifest, [PYTHON, str(tmp_path / "reader.py")])

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10001:0", "10002:13"]


def test_failed_fetch_writes_nothing_and_starts_nothing(tmp_path):
    require_mount_namespace()
    manifest = write_manifest(tmp_path, MANIFEST + "      missing: {from: dev, key: no.such}\n")
    marker = tmp_path / "started"
    script = (f"set +e; {PYTHON} -m secret_init -f {manifest} -- touch {marker}; echo \"code=$?\"\n"
              "ls -A /run/secrets | wc -l")

    result = subprocess.run(in_tmpfs_namespace(script), capture_output=True, text=True, cwd=ROOT)

    assert result.stdout.split() == ["code=65", "0"], result.stderr
    assert "no.such" in result.stderr
    assert not marker.exists()


def test_failed_run_keeps_previous_set(tmp_path):
    require_mount_namespace()
    good = write_manifest(tmp_path, MANIFEST)
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text() + "  missing: {from: dev, key: no.such}\n")
    script = (f"{PYTHON} -m secret_init -f {good} fetch\n"
              f"set +e; {PYTHON} -m secret_init -f {bad} fetch; echo \"code=$?\"\n"
              "cat /run/secrets/db_password; echo; ls -A /run/secrets | tr '\\n' ' '")
    result = subprocess.run(in_tmpfs_namespace(script), capture_output=True, text=True, cwd=ROOT)

    lines = result.stdout.splitlines()
    assert lines[0] == "code=65"
    assert lines[1] == "s3cret-db"
    entries = lines[2].split()
    assert sum(1 for e in entries if e.startswith("..2")) == 1
    assert "missing" not in entries


def test_rerun_replaces_set_and_removes_dropped_names(tmp_path):
    require_mount_namespace()
    first = write_manifest(tmp_path, MANIFEST)
    second = tmp_path / "second.yaml"
    second.write_text(textwrap.dedent("""
        version: 1
        output: {dir: /run/secrets}
        backends:
          dev: {type: file, path: ./dev.yaml}
        secrets:
          db_password: {from: dev, key: api.token}
    """))
    script = (f"{PYTHON} -m secret_init -f {first} fetch\n"
              f"{PYTHON} -m secret_init -f {second} fetch\n"
              "cat /run/secrets/db_password; echo; ls -A /run/secrets | tr '\\n' ' '")
    result = subprocess.run(in_tmpfs_namespace(script), capture_output=True, text=True, cwd=ROOT)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "tok-123"
    entries = sorted(lines[1].split())
    assert [e for e in entries if not e.startswith("..")] == ["db_password"]
    assert len([e for e in entries if e.startswith("..2")]) == 1


def test_sigterm_before_handover_exits_143_and_writes_nothing(tmp_path):
    # A file backend pointed at a FIFO blocks in open(), so the signal lands mid-fetch.
    fifo = tmp_path / "blocked.yaml"
    os.mkfifo(fifo)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(textwrap.dedent(f"""
        version: 1
        output: {{dir: {tmp_path / 'out'}, allow_disk: true}}
        backends:
          dev: {{type: file, path: {fifo}}}
        secrets:
          a: {{from: dev, key: x}}
    """))
    process = subprocess.Popen([PYTHON, "-m", "secret_init", "-f", str(manifest), "--",
                                "touch", str(tmp_path / "started")],
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    # Wait until the fetch thread sits in open() on the FIFO.
    for _ in range(200):
        if any("blocked.yaml" in os.readlink(f"/proc/{process.pid}/fd/{fd}")
               for fd in os.listdir(f"/proc/{process.pid}/fd")
               if os.path.exists(f"/proc/{process.pid}/fd/{fd}")) or \
                _thread_waits_on_fifo(process.pid):
            break
        import time
        time.sleep(0.02)
    process.send_signal(15)
    _, stderr = process.communicate(timeout=10)

    assert process.returncode == 143
    assert "SIGTERM" in stderr
    assert not (tmp_path / "started").exists()
    assert not (tmp_path / "out").exists()


def _thread_waits_on_fifo(pid: int) -> bool:
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/wchan") as stream:
                if "fifo" in stream.read():
                    return True
    except OSError:
        pass
    return False


def test_write_false_feeds_template_without_file(tmp_path):
    manifest = write_manifest(tmp_path, f"""
        version: 1
        output: {{dir: {tmp_path / 'out'}, allow_disk: true}}
        backends:
          dev: {{type: file, path: ./dev.yaml}}
        secrets:
          password: {{from: dev, key: database.password, write: false, env: APP_PASSWORD}}
          app.ini: {{template: "password = ${{password}}\\n"}}
    """)
    result = subprocess.run([PYTHON, "-m", "secret_init", "-f", str(manifest), "--",
                             "sh", "-c", "echo $APP_PASSWORD"],
                            capture_output=True, text=True, cwd=ROOT)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "s3cret-db\n"
    assert (tmp_path / "out" / "app.ini").read_text() == "password = s3cret-db\n"
    assert not (tmp_path / "out" / "password").exists()
    assert "wrote 1 secret " in result.stderr


def test_write_false_rejects_file_fields(tmp_path):
    manifest = write_manifest(tmp_path, """
        version: 1
        backends:
          dev: {type: file, path: ./dev.yaml}
        secrets:
          password: {from: dev, key: database.password, write: false, mode: "0440"}
    """)
    result = subprocess.run([PYTHON, "-m", "secret_init", "check", "-f", str(manifest)],
                            capture_output=True, text=True, cwd=ROOT)

    assert result.returncode == 78
    assert "'write: false'" in result.stderr
    assert ":6:" in result.stderr


def test_fake_run_without_root_ignores_owners(tmp_path, monkeypatch, caplog):
    # The interpreter is not reachable by other users here, so the run happens in this
    # process with geteuid reporting a non-root user, and publish() records what it gets.
    from secret_init import run as run_module

    manifest = write_manifest(tmp_path, MANIFEST.replace("/run/secrets", str(tmp_path / "out")))
    fake = tmp_path / "fake.yaml"
    fake.write_text("db_password: a\napi_token: b\ntls.key: c\n")
    published = {}

    def record(directory, files, **owner):
        published.update(files=files, **owner)
        return directory

    monkeypatch.setattr(run_module.os, "geteuid", lambda: 10005)
    monkeypatch.setattr(run_module.os, "getegid", lambda: 10005)
    monkeypatch.setattr(run_module, "publish", record)

    with caplog.at_level("WARNING", logger="secret_init"):
        run_module.prepare(run_module.RunOptions(manifest_path=str(manifest), fake_path=str(fake)))

    assert "written as uid 10005" in caplog.text
    assert {(f.uid, f.gid) for f in published["files"]} == {(10005, 10005)}
    assert (published["dir_uid"], published["dir_gid"]) == (10005, 10005)


def test_tmpfs_hidden_by_later_mount_is_rejected(tmp_path):
    # A tmpfs at base/run/secrets, then a disk folder bind-mounted over base/run: the path
    # now reaches the disk, although mountinfo still lists the hidden tmpfs.
    require_mount_namespace()
    base = tmp_path / "base"
    (base / "run" / "secrets").mkdir(parents=True)
    disk = tmp_path / "disk"
    (disk / "secrets").mkdir(parents=True)
    script = (f"mount -t tmpfs tmpfs {base}/run/secrets\n"
              f"mount --bind {disk} {base}/run\n"
              f"{PYTHON} -c 'from secret_init.mounts import is_memory_filesystem; "
              f"print(is_memory_filesystem(\"{base}/run/secrets\")[0])'")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script],
                            capture_output=True, text=True, cwd=ROOT)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_tmpfs_output_is_detected(tmp_path):
    require_mount_namespace()
    target = tmp_path / "secrets"
    target.mkdir()
    script = (f"mount -t tmpfs tmpfs {target}\n"
              f"{PYTHON} -c 'from secret_init.mounts import filesystem_type; "
              f"print(*filesystem_type(\"{target}/sub/file\"))'")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script],
                            capture_output=True, text=True, cwd=ROOT)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tmpfs", str(target)]


def test_fetch_threads_block_every_signal(tmp_path):
    # A signal taken by a fetch thread would wait for the main thread's next check, which
    # may be the deadline, so only the main thread may take signals.
    import signal
    import threading

    from secret_init.fetch import start_without_signals

    seen = {}
    thread = threading.Thread(target=lambda: seen.update(mask=signal.pthread_sigmask(
        signal.SIG_BLOCK, [])))
    start_without_signals([thread])
    thread.join()

    assert {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1} <= seen["mask"]
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
