"""One run per folder: the lock file ``OUT/.lock``.

A run (and ``--resume``) takes the lock before it writes anything into its folder and removes it
when it ends, however it ends (done, failed, interrupted). The lock file is created atomically
(``O_CREAT | O_EXCL``), holds the owner's pid, host and start time, and stays
``flock``-ed by the owner while it runs. So:

- two runs given the same ``--out`` at once: exactly one creates the file; the other finds it
  held and stops with one line (``LockError``, exit status 2) naming the owner's pid;
- a lock left by a run that died without cleaning up (``kill -9``, a power loss) is *stale*: the
  kernel released its ``flock`` when the owner died. A stale lock is taken over safely — the
  newcomer holds the ``flock`` of the very file it found (and checks the name still points to
  that file), writes its own pid into it, and says so on stderr. No pid guessing: a pid reused
  by an unrelated process does not keep a stale lock alive, and a live run's lock is never
  taken. (``flock`` is local to one machine; two hosts writing one network folder are not
  detected.)
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from .fileio import write_error

LOCK_NAME = ".lock"
_UNWRITTEN_S = 10.0  # an empty lock file younger than this belongs to a run that is starting

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: O_EXCL alone, stale locks need removing by hand
    fcntl = None


class FolderError(ValueError):
    """A run folder that cannot be used as asked; ``str()`` is one line with the fix."""


class LockError(FolderError):
    """The folder is locked by another live run; ``str()`` is one line with the fix."""


class RunLock:
    """The held lock of one run folder (see the module's docstring).

    Use ``RunLock.acquire(folder)``; ``release()`` (idempotent) removes the file. Also a context
    manager.
    """

    def __init__(self, folder: Path, fd: int, took_over: Optional[dict]):
        self.folder = folder
        self.path = folder / LOCK_NAME
        self._fd: Optional[int] = fd
        self.took_over = took_over  # the stale lock's owner (pid, host, started), if any
        self.created_folder = False  # release() then removes the folder if nothing else is in it

    @classmethod
    def acquire(cls, folder: str | os.PathLike) -> "RunLock":
        """Create ``folder`` (and parents) if needed and lock it for this process.

        Raises:
            LockError: another live run holds the lock.
            WriteError: the folder or the lock file cannot be written (read-only, disk full).
        """
        folder = Path(folder)
        path = folder / LOCK_NAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(folder, exc) from None
        for _ in range(20):  # a lock file removed between our attempts: try again
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            except FileExistsError:
                got = _take_stale(path)
                if got is None:
                    continue
                fd, owner = got
                return cls(folder, fd, owner)
            except OSError as exc:
                raise write_error(path, exc) from None
            # ours: flock it (waiting out a newcomer that is only reading it), then write who
            # we are; a newcomer treats a lock without an owner as live, never as stale
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                _write_owner(fd)
            except OSError as exc:
                os.close(fd)
                _unlink(path)
                raise write_error(path, exc) from None
            return cls(folder, fd, None)
        raise LockError(f"{folder}: could not take the lock {path} (it keeps appearing and "
                        "vanishing); is another run starting there?")

    def release(self) -> None:
        """Remove the lock file (while still holding its flock, so no newcomer can mistake the
        vanishing file for a stale lock it may take over)."""
        if self._fd is None:
            return
        try:
            _unlink(self.path)
        finally:
            os.close(self._fd)
            self._fd = None
        if self.created_folder:
            try:
                self.folder.rmdir()  # only when empty: a run stopped before it wrote anything
            except OSError:
                pass

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim(folder: str | os.PathLike, resume: bool = False, auto: bool = False) -> RunLock:
    """Lock the run folder a run will write.

    Args:
        folder: the run folder (``--out``, or the folder ``--resume`` continues).
        resume: the folder must exist and may hold a run (the one to continue).
        auto: the folder name was chosen by us (``runs/<timestamp>``): when it is taken, the
            next free name (``-2``, ``-3``, ...) is used instead of failing.

    Returns:
        The held lock; ``lock.folder`` is the folder locked.

    Raises:
        FolderError: a file, not a folder; a new run's folder that is not empty (one holding an
            interrupted run names ``--resume``); a folder to resume that does not exist.
        LockError: another live run holds the folder.
        WriteError: the folder or the lock cannot be written (read-only, disk full).
    """
    folder = Path(folder)
    base, n = folder, 1
    while True:
        if folder.exists() and not folder.is_dir():
            raise FolderError(f"--out {folder}: is a file, not a folder")
        if resume and not folder.is_dir():
            raise FolderError(f"--resume {folder}: no such folder; give the folder of the run "
                              "to continue")
        created = not folder.exists()
        try:
            lock = RunLock.acquire(folder)
        except LockError:
            if not auto:
                raise
        else:
            lock.created_folder = created
            if resume or not _holds_more_than_lock(folder):
                return lock
            lock.release()
            if not auto:
                raise FolderError(_not_empty(folder))
        n += 1
        folder = base.with_name(f"{base.name}-{n}")


def check_new(folder: str | os.PathLike) -> None:
    """The early check of a new run's ``--out``, before the model is built (``claim`` checks
    again under the lock).

    Raises:
        FolderError: a file; a folder that is not empty (another live run's: LockError).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"--out {folder}: is a file, not a folder")
    if folder.is_dir() and _holds_more_than_lock(folder):
        who = holder(folder)
        if who is not None:
            raise LockError(_held_message(folder / LOCK_NAME, who))
        raise FolderError(_not_empty(folder))


def holder(folder: str | os.PathLike) -> Optional[dict]:
    """The owner of ``folder``'s lock when a live run holds it ({} when its owner is not
    written yet), else None. Takes nothing."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        info = _parse(_read_all(fd)) or {}
        if fcntl is None:
            return info
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return info
        return None
    finally:
        os.close(fd)


def _holds_more_than_lock(folder: Path) -> bool:
    return any(p.name != LOCK_NAME for p in folder.iterdir())


def _not_empty(folder: Path) -> str:
    try:
        status = json.loads((folder / "facts.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status in ("interrupted", "running"):
        return (f"--out {folder}: holds an unfinished run ({status}); continue it with "
                f"--resume {folder}, or choose a new --out")
    return f"--out {folder}: folder is not empty (it may hold an earlier run); choose a new one"


def owner(folder: str | os.PathLike) -> Optional[dict]:
    """The owner recorded in ``folder``'s lock file (pid, host, started), or None."""
    try:
        return _parse((Path(folder) / LOCK_NAME).read_bytes())
    except OSError:
        return None


def _take_stale(path: Path):
    """(fd, previous owner) when the existing lock at ``path`` is stale and now ours; None when
    it vanished meanwhile (the caller retries).

    Raises:
        LockError: a live run holds it.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        info = _parse(_read_all(fd))
        if fcntl is None:
            raise LockError(_held_message(path, info))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockError(_held_message(path, info)) from None
            raise write_error(path, exc) from None
        # we hold its flock, so its owner is gone -- unless it was released and unlinked just
        # now (then the name points elsewhere or nowhere), or just created and not yet written
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        info = _parse(_read_all(fd))
        if info is None and time.time() - os.fstat(fd).st_mtime < _UNWRITTEN_S:
            # an owner that created the file and has not written it yet (an empty lock older
            # than that was left by a run that died right after creating it: stale)
            raise LockError(_held_message(path, info))
        _write_owner(fd)
        return fd, info
    except BaseException:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        raise


def _held_message(path: Path, info: Optional[dict]) -> str:
    who = (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
           if info and "pid" in info else "a run that is starting")
    return (f"{path.parent}: another run ({who}) is writing this folder; wait for it to finish "
            "or choose another --out (the lock is released when that run ends)")


def _write_owner(fd: int) -> None:
    data = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode() + b"\n"
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, data)
    os.fsync(fd)


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    parts = []
    while True:
        b = os.read(fd, 4096)
        if not b:
            return b"".join(parts)
        parts.append(b)


def _parse(data: bytes) -> Optional[dict]:
    try:
        info = json.loads(data)
    except ValueError:
        return None
    return info if isinstance(info, dict) and "pid" in info else None


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
