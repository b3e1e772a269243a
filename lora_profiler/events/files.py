"""Finding trace files and reading them as a stream of text chunks.

A path may be a file (``.json`` or gzip-compressed, recognised by its magic bytes, not its
name) or a folder of per-rank files. Reading in chunks keeps the decompressed text of a large
trace out of memory: only a few MiB of text are held at a time, however much a small gzip file
claims to inflate to.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

from . import fast
from .errors import TraceError

PathLike = Union[str, "os.PathLike[str]"]

CHUNK_BYTES = 1 << 20  # bytes of (decompressed) text handed on per chunk
_GZIP_MAGIC = b"\x1f\x8b"
# Folder search: profiler output first; plain JSON only when no profiler output is there.
_PROFILER_GLOBS = ("*.pt.trace.json", "*.pt.trace.json.gz")
_JSON_GLOBS = ("*.json", "*.json.gz")
# JSON files that sit in our run folders and are not traces.
_NOT_TRACES = {"facts.json", "report.json"}


def find_trace_files(paths: Union[PathLike, Sequence[PathLike]]) -> List[Path]:
    """Expand files and folders into the list of trace files to read.

    Args:
        paths: one path or a sequence of paths; each a trace file or a folder holding
            ``*.pt.trace.json[.gz]`` files (or, when there are none, ``*.json[.gz]``).

    Returns:
        Trace files in a stable order (sorted per folder, argument order across arguments).

    Raises:
        TraceError: a path does not exist, or a folder holds no trace file.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if len(paths) == 0:
        raise TraceError("no trace path given: pass a trace file (.json / .json.gz) or a folder")
    out: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = _search_folder(p)
            if not found:
                raise TraceError(
                    f"{p}: folder holds no trace file (*.pt.trace.json[.gz], *.json[.gz]); "
                    "point at the folder torch.profiler wrote, or at a trace file")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        elif p.exists():
            raise TraceError(f"{p}: not a regular file or folder; pass a trace file or folder")
        else:
            raise TraceError(f"{p}: no such file or folder; check the path")
    return out


def _search_folder(folder: Path) -> List[Path]:
    """Trace files directly inside ``folder`` (profiler output preferred)."""
    for globs in (_PROFILER_GLOBS, _JSON_GLOBS):
        found = sorted({f for g in globs for f in folder.glob(g)
                        if f.is_file() and f.name not in _NOT_TRACES})
        if found:
            return found
    return []


def iter_text(path: Path, opened: Optional[list] = None) -> Iterator[str]:
    """Yield the text of ``path`` in chunks, decompressing gzip on the fly.

    ``opened``, when given, receives the ``os.fstat`` of the file as opened (what a worker
    that reads the same file checks it has: ``parallel``).

    Raises:
        TraceError: the file is empty, a truncated or corrupt gzip stream, or not UTF-8.
    """
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise TraceError(f"{path}: cannot open ({exc.strerror}); check permissions") from exc
    if opened is not None:
        opened.append(os.fstat(fh.fileno()))
    head = _read(fh, 2)
    if not head:
        fh.close()
        raise TraceError(f"{path}: empty file; re-export the trace (torch.profiler "
                         "export_chrome_trace or tensorboard_trace_handler)")
    fh.seek(0)
    if head == _GZIP_MAGIC:
        raw = _closing(fh, _gunzip_chunks(fh, path))
    else:
        raw = _closing(fh, _plain_chunks(fh))
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for block in raw:
            text = decoder.decode(block)
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text (byte {exc.start} of a chunk); "
                         "is this really a JSON trace?") from exc
    finally:
        raw.close()
    if tail:
        yield tail


def _closing(fh, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, closing ``fh`` when they end or the consumer stops."""
    with fh:
        yield from chunks


def _read(fh, n: int) -> bytes:
    """``fh.read(n)``; an I/O error (a vanished network file, a bad disk) is a TraceError."""
    try:
        return fh.read(n)
    except OSError as exc:
        raise TraceError(f"{fh.name}: read failed ({exc.strerror or exc}); check the file "
                         "system and re-copy the trace") from exc


def _plain_chunks(fh) -> Iterator[bytes]:
    """Raw chunks of an uncompressed file."""
    while True:
        block = _read(fh, CHUNK_BYTES)
        if not block:
            return
        yield block


def _gunzip_chunks(fh, path: Path) -> Iterator[bytes]:
    """Decompressed chunks (at most ``CHUNK_BYTES`` each) of a possibly multi-member gzip file
    (isal's inflate when installed, else zlib's: the same bytes either way)."""
    errors = fast.zlib_errors()
    d = fast.decompressobj()
    while True:
        block = _read(fh, CHUNK_BYTES // 8)
        if not block:
            break
        while block:
            try:
                out = d.decompress(block, CHUNK_BYTES)
            except errors as exc:
                raise TraceError(f"{path}: corrupt gzip data ({exc}); re-copy the file") from exc
            if out:
                yield out
            if d.unconsumed_tail:
                block = d.unconsumed_tail
            elif d.eof and d.unused_data.strip(b"\x00"):  # next gzip member
                block = d.unused_data
                d = fast.decompressobj()
            else:
                block = b""
    if not d.eof:
        raise TraceError(f"{path}: truncated gzip file (the compressed stream ends early); "
                         "re-copy or re-export the trace")
