"""runlock: one run per folder; a live run's lock is never taken, a stale one is taken over."""

import json
import os
import subprocess
import sys
import time

import pytest

from lora_profiler.runlock import LOCK_NAME, FolderError, LockError, RunLock, check_new, claim, holder


def test_second_lock_on_a_held_folder_fails_with_the_owner(tmp_path):
    lock = RunLock.acquire(tmp_path / "run")
    info = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    assert info["pid"] == os.getpid()
    with pytest.raises(LockError, match=rf"another run \(pid {os.getpid()} on .*\) is writing this folder"):
        RunLock.acquire(tmp_path / "run")
    assert holder(tmp_path / "run")["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    assert holder(tmp_path / "run") is None
    RunLock.acquire(tmp_path / "run").release()  # free again


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    # a real process takes the lock and dies without releasing it (kill -9)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lora_profiler.runlock import RunLock; "
         f"RunLock.acquire({str(tmp_path)!r}); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=_env())
    assert child.stdout.readline().strip() == "locked"
    with pytest.raises(LockError, match=f"pid {child.pid}"):
        RunLock.acquire(tmp_path)
    child.kill()
    child.wait()
    lock = RunLock.acquire(tmp_path)
    assert lock.took_over["pid"] == child.pid
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_file_not_yet_written_counts_as_live_then_stale(tmp_path):
    path = tmp_path / LOCK_NAME
    path.write_text("")  # a run that created the file and has not written its pid yet
    with pytest.raises(LockError, match="a run that is starting"):
        RunLock.acquire(tmp_path)
    old = time.time() - 60
    os.utime(path, (old, old))  # ... or one that died right after creating it
    RunLock.acquire(tmp_path).release()


def test_claim_new_folder(tmp_path):
    lock = claim(tmp_path / "new")
    assert lock.created_folder and (tmp_path / "new" / LOCK_NAME).is_file()
    lock.release()
    assert not (tmp_path / "new").exists()  # nothing was written: the folder goes too
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "report.json").write_text("{}")
    with pytest.raises(FolderError, match="folder is not empty"):
        claim(tmp_path / "used")
    with pytest.raises(FolderError, match="folder is not empty"):
        check_new(tmp_path / "used")
    (tmp_path / "used" / "facts.json").write_text('{"status": "interrupted"}')
    with pytest.raises(FolderError, match=r"unfinished run \(interrupted\); continue it with --resume"):
        check_new(tmp_path / "used")
    (tmp_path / "file").write_text("")
    with pytest.raises(FolderError, match="is a file, not a folder"):
        claim(tmp_path / "file")
    with pytest.raises(FolderError, match="no such folder"):
        claim(tmp_path / "nothing", resume=True)


def test_claim_auto_takes_the_next_free_name(tmp_path):
    first = claim(tmp_path / "20260101-000000", auto=True)
    second = claim(tmp_path / "20260101-000000", auto=True)
    assert second.folder.name == "20260101-000000-2"
    (first.folder / "facts.json").write_text("{}")  # the first run has started writing
    with pytest.raises(LockError, match="another run"):
        check_new(first.folder)  # a new run on that folder is told it is in use, not just full
    first.release()
    second.release()


def _env():
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env
