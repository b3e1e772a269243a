"""Durable, atomic file writes: a reader never sees half a file, and a crash or power loss never
leaves a half-written file under its final name.

Every file goes to a temporary name in the same folder, is flushed and ``fsync``-ed, then
renamed over its final name, and the folder is ``fsync``-ed so the rename itself is on disk. A
write that fails (disk full, read-only folder, no permission) removes its temporary file and
raises ``WriteError``: one line naming the file, the reason and the fix.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, "os.PathLike[str]"]

_FIX = {
    errno.ENOSPC: "free some space or choose another --out",
    errno.EDQUOT: "free some space (disk quota exceeded) or choose another --out",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.EACCES: "no permission to write there: choose another --out",
    errno.EPERM: "no permission to write there: choose another --out",
}


class WriteError(OSError):
    """A file could not be written; ``str()`` is one line naming the file and the fix."""

    def __init__(self, path: PathLike, exc: OSError):
        self.path = str(path)
        reason = exc.strerror or str(exc) or type(exc).__name__
        fix = _FIX.get(exc.errno or 0, "check the folder and the disk")
        super().__init__(exc.errno, f"cannot write {self.path}: {reason}; {fix}")
        self.hint = ""  # appended to the line, e.g. how to continue the run once fixed

    def __str__(self) -> str:
        return self.strerror + self.hint


def write_error(path: PathLike, exc: OSError) -> WriteError:
    """``exc`` as a WriteError naming ``path`` (unchanged when it already is one)."""
    return exc if isinstance(exc, WriteError) else WriteError(path, exc)


def not_written(path: PathLike) -> WriteError:
    """A WriteError for a file another library was asked to write and did not (the profiler
    logs a failed trace export and returns): the reason guessed from the folder's state."""
    folder = Path(path).parent
    code = errno.EIO
    try:
        st = os.statvfs(folder)
        if st.f_bavail * st.f_frsize < (1 << 20):
            code = errno.ENOSPC
        elif st.f_flag & getattr(os, "ST_RDONLY", 1):
            code = errno.EROFS
        elif not os.access(folder, os.W_OK):
            code = errno.EACCES
    except OSError:
        pass
    return WriteError(path, OSError(code, os.strerror(code) if code != errno.EIO
                                    else "the file was not written (the writer gave no reason)"))


def fsync_dir(folder: PathLike) -> None:
    """Make a rename or creation inside ``folder`` durable (a no-op where folders cannot be
    opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder: the rename is still atomic
        pass
    finally:
        os.close(fd)


def replace_durably(tmp: PathLike, path: PathLike) -> None:
    """Rename the finished file ``tmp`` to ``path`` after its bytes are on disk (``fsync``),
    then ``fsync`` the folder. On failure ``tmp`` is removed and a WriteError raised."""
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink(tmp)
        raise write_error(path, exc) from None
    fsync_dir(Path(path).parent)


def write_atomic(path: PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably.

    The data goes to a temporary file in the same folder, which is flushed, ``fsync``-ed and
    renamed over ``path``; then the folder is ``fsync``-ed. Readers see the old file or the new
    one, never a part.

    Raises:
        WriteError: the folder or the file could not be written (disk full, read-only, no
            permission); the temporary file is removed, an existing ``path`` is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException as exc:
        _unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
    fsync_dir(path.parent)
    return path


def write_json(path: PathLike, obj: Any) -> Path:
    """``write_atomic`` of ``obj`` as indented JSON (NaN/inf written as null)."""
    return write_atomic(path, json.dumps(finite(obj), indent=2) + "\n")


def _unlink(path: PathLike) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def finite(obj: Any) -> Any:
    """``obj`` as JSON will hold it: NaN and inf as None, keys as strings, tuples as lists."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


_finite = finite
