"""The one writer (harness/files.py) and what it writes onto: a regular file or a missing path is replaced
atomically; a symlink is never replaced (its target is); a character device or FIFO is written through
for a user's output and refused by the harness's own stores; a block device, socket, folder or symlink
loop is one line. Also the cache folder's default and the libraries' side files."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading

import pytest

from harness import files
from harness.errors import HarnessError
from harness.files import atomic_file, check_output_file, write_json_atomic, write_text_atomic

ROOT = os.geteuid() == 0


def test_a_regular_file_is_replaced_atomically(tmp_path):
    target = tmp_path / "r.md"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["r.md"]
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["r.md"]


def test_a_symlink_stays_a_symlink_and_its_target_is_replaced(tmp_path):
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "r.md"
    real.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    chain = tmp_path / "chain.md"
    chain.symlink_to(link)
    write_text_atomic(chain, "new")
    assert chain.is_symlink() and link.is_symlink() and real.read_text() == "new"
    assert sorted(os.listdir(tmp_path / "real")) == ["r.md"]  # the temp file lived beside the target
    dangling = tmp_path / "dangling.md"
    dangling.symlink_to(tmp_path / "made" / "d.md")
    write_json_atomic(dangling, {"a": 1}, devices=False)
    assert dangling.is_symlink() and (tmp_path / "made" / "d.md").read_text() == '{\n  "a": 1\n}\n'


def test_a_symlink_loop_is_one_line(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for call in (lambda: write_text_atomic(tmp_path / "a", "x", what="-o"),
                 lambda: check_output_file("-o", str(tmp_path / "a"))):
        with pytest.raises(HarnessError, match=r"^-o .*/a: is a symlink loop; point it at a file or remove it$"):
            call()


def test_devices_and_fifos_are_written_through_for_outputs_and_refused_by_stores(tmp_path):
    write_text_atomic("/dev/null", "through")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    with pytest.raises(HarnessError, match=r"^the result record /dev/null: is a character device, not a regular "
                                           r"file; the harness keeps its own regular files there"):
        write_json_atomic("/dev/null", {}, what="the result record", devices=False)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_text_atomic(fifo, "through a pipe")
    reader.join(10)
    assert got == ["through a pipe"] and stat.S_ISFIFO(fifo.lstat().st_mode)
    link = tmp_path / "null.md"
    link.symlink_to("/dev/null")
    write_text_atomic(link, "x")
    assert link.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    check_output_file("-o", "/dev/null")
    check_output_file("-o", str(link))


def test_folders_sockets_and_block_devices_are_refused(tmp_path):
    with pytest.raises(HarnessError, match=r"^-o .*: is a folder; pass a file name"):
        write_text_atomic(tmp_path, "x", what="-o")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        with pytest.raises(HarnessError, match=r"sock: is a socket, not a regular file; pass a file path$"):
            write_text_atomic(tmp_path / "sock", "x")
        with pytest.raises(HarnessError, match=r"^-o .*sock: is a socket"):
            check_output_file("-o", str(tmp_path / "sock"))
    finally:
        sock.close()
    if ROOT:
        os.mknod(tmp_path / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 250))
        with pytest.raises(HarnessError, match=r"^-o .*blk: is a block device, not a regular file; pass a file path$"):
            check_output_file("-o", str(tmp_path / "blk"))
        with pytest.raises(HarnessError, match=r"blk: is a block device"):
            write_text_atomic(tmp_path / "blk", "x")
        assert stat.S_ISBLK((tmp_path / "blk").lstat().st_mode)


def test_locks_and_replaced_folders_refuse_symlinks(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "k.lock").symlink_to(tmp_path / "elsewhere" / "k.lock")
    with pytest.raises(HarnessError, match=r"lock file .*k.lock: is a symlink; remove it"), \
            files.file_lock(tmp_path / "k.lock"):
        pass
    (tmp_path / "state").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "keep").write_text("x")
    for call in (lambda: files.fresh_dir(tmp_path / "state"),
                 lambda: files.replace_dir(tmp_path / "new", tmp_path / "state")):
        with pytest.raises(HarnessError, match=r"state: is a symlink where the harness writes a folder"):
            call()
    assert (tmp_path / "elsewhere" / "keep").exists() and not (tmp_path / "elsewhere" / "k.lock").exists()


# -------------------------------------------------------------------------------------- the environment
def test_an_empty_cache_dir_variable_is_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for value in ("", "  "):
        monkeypatch.setenv("HARNESS_CACHE_DIR", value)
        assert files.default_cache_dir() == tmp_path / ".cache" / "sovit-harness"
    monkeypatch.setenv("HARNESS_CACHE_DIR", "~/c")
    assert files.default_cache_dir() == tmp_path / "c"


SIDE = """
import os, sys
from harness import files
files.side_files_under(sys.argv[1])
print(os.environ.get("MPLCONFIGDIR"), os.environ.get("KERAS_HOME"))
"""


def test_side_files_go_under_the_cache_unless_the_user_chose(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in files.SIDE_FILES}

    def side(**extra):
        p = subprocess.run([sys.executable, "-c", SIDE, str(tmp_path / "cache")], env={**env, **extra},
                           capture_output=True, text=True, check=True)
        return p.stdout.split()

    assert side() == [str(tmp_path / "cache" / "matplotlib"), str(tmp_path / "cache" / "keras")]
    assert side(MPLCONFIGDIR="") == [str(tmp_path / "cache" / "matplotlib"), str(tmp_path / "cache" / "keras")]
    assert side(KERAS_HOME="/mine") == [str(tmp_path / "cache" / "matplotlib"), "/mine"]
