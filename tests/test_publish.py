"""The atomic ..data layout: readers never see a mix, and kill -9 never loses the old set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from secret_init.publish import OutputFile, publish

NAMES = [f"secret_{i:02d}" for i in range(20)]


def generation_files(generation: int, size: int = 4096) -> list[OutputFile]:
    return [OutputFile(name=name, content=(f"{generation}:{name}:".encode() * size)[:size],
                       mode=0o400, uid=os.geteuid(), gid=os.getegid()) for name in NAMES]


def read_set(directory: Path) -> set[int]:
    """Read every file of the current set through one resolution of ..data; return generations."""
    version = os.readlink(directory / "..data")
    generations = set()
    for name in NAMES:
        content = (directory / version / name).read_bytes()
        assert len(content) == 4096, f"{name} is {len(content)} bytes, expected 4096"
        generations.add(int(content.split(b":", 1)[0]))
    return generations


def test_publish_layout_and_modes(tmp_path):
    version_path = publish(str(tmp_path), generation_files(1), dir_mode=0o750,
                           dir_uid=os.geteuid(), dir_gid=os.getegid())

    assert os.readlink(tmp_path / "..data") == os.path.basename(version_path)
    for name in NAMES:
        assert os.readlink(tmp_path / name) == f"..data/{name}"
        assert (os.stat(tmp_path / name).st_mode & 0o7777) == 0o400
    assert (os.stat(version_path).st_mode & 0o7777) == 0o750


def test_publish_refuses_to_replace_a_regular_file(tmp_path):
    (tmp_path / NAMES[0]).write_text("not ours")
    with pytest.raises(Exception) as caught:
        publish(str(tmp_path), generation_files(1), dir_mode=0o755,
                dir_uid=os.geteuid(), dir_gid=os.getegid())
    assert "is not a secret-init link" in str(caught.value)
    assert (tmp_path / NAMES[0]).read_text() == "not ours"


def test_reader_never_sees_a_mixed_set(tmp_path):
    publish(str(tmp_path), generation_files(0), dir_mode=0o755,
            dir_uid=os.geteuid(), dir_gid=os.getegid())
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, sys
        directory = {str(tmp_path)!r}
        names = {NAMES!r}
        reads = 0
        while not os.path.exists(os.path.join(directory, "stop")):
            version = os.readlink(os.path.join(directory, "..data"))
            generations = set()
            for name in names:
                try:
                    data = open(os.path.join(directory, version, name), "rb").read()
                except FileNotFoundError:
                    # The version was replaced and removed after readlink; re-resolve.
                    generations = None
                    break
                if len(data) != 4096:
                    print("partial", name, len(data)); sys.exit(1)
                generations.add(data.split(b":", 1)[0])
            # Every stable name always resolves, too.
            for name in names:
                if not os.path.exists(os.path.join(directory, name)):
                    print("missing", name); sys.exit(1)
            if generations is not None and len(generations) != 1:
                print("mixed", generations); sys.exit(1)
            reads += 1
        print(reads)
    """)], stdout=subprocess.PIPE, text=True)

    for generation in range(1, 150):
        publish(str(tmp_path), generation_files(generation), dir_mode=0o755,
                dir_uid=os.geteuid(), dir_gid=os.getegid())
    (tmp_path / "stop").touch()
    output, _ = reader.communicate(timeout=30)

    assert reader.returncode == 0, output
    assert int(output) > 0
    assert read_set(tmp_path) == {149}


def test_kill_9_during_writing_keeps_previous_set(tmp_path):
    publish(str(tmp_path), generation_files(0), dir_mode=0o755,
            dir_uid=os.geteuid(), dir_gid=os.getegid())
    writer_code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from secret_init.publish import OutputFile, publish
        names = {NAMES!r}
        generation = 1
        while True:
            files = [OutputFile(name=n, content=(f"{{generation}}:{{n}}:".encode() * 4096)[:4096],
                                mode=0o400, uid=os.geteuid(), gid=os.getegid()) for n in names]
            publish({str(tmp_path)!r}, files, dir_mode=0o755, dir_uid=os.geteuid(),
                    dir_gid=os.getegid())
            generation += 1
    """)
    kills = 0
    interrupted_writes = 0
    delays = [0.005 * (i % 17) + 0.05 for i in range(25)]
    for delay in delays:
        writer = subprocess.Popen([sys.executable, "-c", writer_code])
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        kills += 1
        # Whatever moment the kill hit, ..data names one complete generation.
        assert len(read_set(tmp_path)) == 1
        for name in NAMES:
            assert (tmp_path / name).exists()
        current = os.readlink(tmp_path / "..data")
        if any(e.startswith("..2") and e != current for e in os.listdir(tmp_path)):
            interrupted_writes += 1

    # The kills must have hit some writes halfway, or this test proved nothing.
    assert interrupted_writes > 0
    # The next publish removes every leftover of the killed writers.
    publish(str(tmp_path), generation_files(999), dir_mode=0o755,
            dir_uid=os.geteuid(), dir_gid=os.getegid())
    leftovers = [e for e in os.listdir(tmp_path) if e.startswith("..") and e != "..data"]
    assert len(leftovers) == 1
    assert read_set(tmp_path) == {999}
    assert kills == len(delays)


def test_planted_reserved_names_do_not_break_publish(tmp_path):
    publish(str(tmp_path), generation_files(1)[:1], dir_mode=0o755,
            dir_uid=os.geteuid(), dir_gid=os.getegid())
    # Someone with write access to the folder plants directories under the temporary names.
    (tmp_path / f"..link_tmp_{NAMES[1]}").mkdir()
    (tmp_path / f"..link_tmp_{NAMES[1]}" / "file").write_text("x")
    (tmp_path / "..data_tmp").mkdir()

    publish(str(tmp_path), generation_files(2), dir_mode=0o755,
            dir_uid=os.geteuid(), dir_gid=os.getegid())

    assert read_set(tmp_path) == {2}
    assert sorted(e for e in os.listdir(tmp_path) if e.startswith("..") and e != "..data") == \
        [os.readlink(tmp_path / "..data")]


def test_regular_file_in_the_way_fails_before_swap(tmp_path):
    publish(str(tmp_path), generation_files(1)[:1], dir_mode=0o755,
            dir_uid=os.geteuid(), dir_gid=os.getegid())
    before = os.readlink(tmp_path / "..data")
    (tmp_path / NAMES[1]).write_text("not ours")

    with pytest.raises(Exception) as caught:
        publish(str(tmp_path), generation_files(2), dir_mode=0o755,
                dir_uid=os.geteuid(), dir_gid=os.getegid())

    assert str(tmp_path / NAMES[1]) in str(caught.value)
    assert os.readlink(tmp_path / "..data") == before
