"""autoenc.files: atomic_write as open(path, "wb") would behave, and the bounded .npz reader."""
import io
import os
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from autoenc import files
from autoenc.files import atomic_write, read_npz, read_npz_headers

ROOT = Path(__file__).resolve().parents[1]


def umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- atomic_write -----------------------------------------------------------------------------------

def test_atomic_write_creates_directories_with_the_usual_permissions(tmp_path):
    out = atomic_write(tmp_path / "a" / "b" / "f.bin", lambda f: f.write(b"abc"))
    assert out.read_bytes() == b"abc"
    assert os.listdir(tmp_path / "a" / "b") == ["f.bin"]
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask()


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_atomic_write_keeps_the_old_file_and_leaves_nothing_when_writing_fails(tmp_path, error):
    (tmp_path / "f.bin").write_bytes(b"old")

    def fail_halfway(f):
        f.write(b"half")
        raise error

    with pytest.raises(type(error)):
        atomic_write(tmp_path / "f.bin", fail_halfway)
    assert (tmp_path / "f.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_never_touches_the_umask(tmp_path, monkeypatch):
    # changing the process umask, even for a moment, gives other threads' new files the wrong mode
    def no_umask(mask):
        raise AssertionError("atomic_write changed the process umask")

    monkeypatch.setattr(os, "umask", no_umask)
    out = atomic_write(tmp_path / "new.bin", lambda f: f.write(b"abc"))
    monkeypatch.undo()
    assert out.read_bytes() == b"abc"
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask()


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604, 0o755])
def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path, mode):
    path = tmp_path / "secret.bin"
    path.write_bytes(b"old")
    os.chmod(path, mode)
    atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


def test_atomic_write_replaces_a_read_only_file_only_when_open_could(tmp_path):
    path = tmp_path / "ro.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o444)
    try:
        with open(path, "ab"):
            pass
        writable = True          # root: open(path, "w") would write it, so atomic_write does too
    except PermissionError:
        writable = False
    if writable:
        atomic_write(path, lambda f: f.write(b"new"))
        assert path.read_bytes() == b"new"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    else:
        with pytest.raises(PermissionError, match="ro.bin"):
            atomic_write(path, lambda f: f.write(b"new"))
        assert path.read_bytes() == b"old"


def test_atomic_write_refuses_a_read_only_file_like_open(tmp_path, monkeypatch):
    # what a user other than root sees (os.access answers as the kernel would for them)
    path = tmp_path / "ro.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o444)
    monkeypatch.setattr(os, "access", lambda p, m, **kw: False)
    with pytest.raises(PermissionError, match="ro.bin"):
        atomic_write(path, lambda f: f.write(b"new"))
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["ro.bin"]


def test_atomic_write_writes_through_a_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "f.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    assert atomic_write(link, lambda f: f.write(b"new")) == link
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["link.bin", "real"]
    assert os.listdir(tmp_path / "real") == ["f.bin"]


def test_atomic_write_through_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.bin"
    link.symlink_to(tmp_path / "target.bin")
    atomic_write(link, lambda f: f.write(b"new"))
    assert link.is_symlink() and (tmp_path / "target.bin").read_bytes() == b"new"


def test_atomic_write_refuses_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"pipe is a FIFO"):
        atomic_write(fifo, lambda f: f.write(b"new"))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["pipe"]


def test_atomic_write_refuses_a_device_node(tmp_path):
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))   # a second /dev/null
    except PermissionError:
        pytest.skip("creating a device node needs root")
    with pytest.raises(ValueError, match="character device"):
        atomic_write(device, lambda f: f.write(b"new"))
    assert stat.S_ISCHR(os.lstat(device).st_mode)


def test_atomic_write_refuses_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        atomic_write(tmp_path / "d", lambda f: f.write(b"new"))


def test_atomic_write_takes_the_longest_valid_name(tmp_path):
    name = "m" * 250 + ".bin"   # 254 bytes: the longest names most file systems take are 255
    out = atomic_write(tmp_path / name, lambda f: f.write(b"abc"))
    assert out.read_bytes() == b"abc"
    assert os.listdir(tmp_path) == [name]


def test_concurrent_writers_of_one_file_all_succeed(tmp_path):
    path = tmp_path / "f.bin"
    errors = []

    def writer(k):
        try:
            for _ in range(20):
                atomic_write(path, lambda f: f.write(bytes([k]) * 1000))
        except Exception as error:   # noqa: BLE001  collected and reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = path.read_bytes()
    assert len(data) == 1000 and len(set(data)) == 1   # one writer's whole file
    assert os.listdir(tmp_path) == ["f.bin"]


def test_a_killed_writer_leaves_a_hidden_temporary_file_that_a_later_write_removes(tmp_path):
    path = tmp_path / "model.autoenc"
    # a writer dies mid-write (os._exit: no cleanup, as with SIGKILL)
    code = ("import os, sys; from autoenc.files import atomic_write\n"
            "atomic_write(sys.argv[1], lambda f: (f.write(b'half'), f.flush(), os._exit(3)))\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True)
    assert done.returncode == 3, done.stderr
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].endswith(".part")
    # hidden, so folder listings such as the CLI's metrics.json "files" skip it
    assert left[0].startswith(".")
    stale = tmp_path / left[0]
    fresh_time = time.time()
    atomic_write(path, lambda f: f.write(b"new"))          # a recent temporary may be a live writer's
    assert sorted(os.listdir(tmp_path)) == sorted([left[0], "model.autoenc"])
    os.utime(stale, (fresh_time - files.STALE_SECONDS - 60,) * 2)
    atomic_write(path, lambda f: f.write(b"newer"))
    assert os.listdir(tmp_path) == ["model.autoenc"]
    assert path.read_bytes() == b"newer"


# --- read_npz ---------------------------------------------------------------------------------------

def npz_of(path, compression=zipfile.ZIP_DEFLATED, **arrays):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a)
            z.writestr(name + ".npy", buf.getvalue())
    return path


def test_read_npz_headers_reads_shapes_without_data(tmp_path):
    path = npz_of(tmp_path / "a.npz", a=np.zeros((2, 3), np.float32), b=np.arange(4))
    headers = read_npz_headers(path)
    assert headers == {"a": ((2, 3), np.dtype(np.float32)), "b": ((4,), np.arange(4).dtype)}


def test_zip_bomb_is_refused_before_inflating(tmp_path):
    # 3 members of 8 MiB of zeros, about 25 KB on disk, against a cap of 16 MiB in total: each member is
    # under the cap, all three are not
    a = np.zeros(2 * 2**20, np.float32)
    path = npz_of(tmp_path / "bomb.npz", x=a, y=a, z=a)
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"bomb\.npz.*declare \d+ bytes uncompressed in total"):
            read_npz(path, max_bytes=16 * 2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak   # well under one member's 8 MiB


def test_npy_header_must_match_the_declared_member_size(tmp_path):
    # 16 bytes of junk after the array: what the header declares is not what the member holds
    path = tmp_path / "extra.npz"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(4, np.float32))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.npy", buf.getvalue() + b"\0" * 16)
    with pytest.raises(ValueError, match="extra.npz.*declares 16 bytes of data but the archive holds 32"):
        read_npz(path)
