"""fileio: atomic, durable writes; a failed write leaves the old file and no temporary file."""

import errno
import json
import os

import pytest

from lora_profiler import fileio
from lora_profiler.fileio import WriteError, replace_durably, write_atomic, write_json


def test_write_atomic_fsyncs_the_file_then_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    path = write_atomic(tmp_path / "a.json", "{}\n")
    assert path.read_text() == "{}\n"
    assert len(synced) == 2
    if os.path.exists("/proc/self/fd"):
        assert os.path.basename(synced[0]).startswith(".a.json.")  # the temporary file, before the rename
        assert synced[1] == str(tmp_path)                           # then the folder, after it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, err):
    target = tmp_path / "facts.json"
    write_json(target, {"old": 1})

    def full(fd):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError) as info:
        write_json(target, {"new": 2})
    msg = str(info.value)
    assert msg.startswith(f"cannot write {target}: {os.strerror(err)}; ") and "\n" not in msg
    assert info.value.errno == err
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["facts.json"]


def test_interrupted_write_leaves_no_temp(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "x.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(WriteError, match=r"cannot write .*file/sub/x\.json: "):
        write_atomic(blocker / "sub" / "x.json", "{}")


def test_replace_durably(tmp_path):
    tmp = tmp_path / ".t.tmp"
    tmp.write_bytes(b"abc")
    replace_durably(tmp, tmp_path / "t")
    assert (tmp_path / "t").read_bytes() == b"abc" and not tmp.exists()
    with pytest.raises(WriteError):
        replace_durably(tmp_path / ".missing.tmp", tmp_path / "u")
    assert not (tmp_path / "u").exists()


def test_finite_json():
    assert fileio.finite({"a": float("nan"), 1: (1.5, float("inf"))}) == {"a": None, "1": [1.5, None]}
