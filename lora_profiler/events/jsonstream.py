"""Streaming decode of a Chrome trace: one event dict at a time, with the stdlib JSON scanner.

``json.loads`` on a whole 50 MB trace builds every event dict at once (hundreds of MB). Here the
C scanner of the stdlib ``json`` module decodes one event at a time from a text buffer that is
refilled chunk by chunk, so each dict is released as soon as the caller has read it. Nothing is
evaluated: the stdlib decoder only builds dicts, lists, strings and numbers.

Both Chrome trace layouts are accepted: the object form ``{"traceEvents": [...], ...}`` (what
Kineto writes; the other top-level keys are returned as metadata) and the bare array form
``[{...}, {...}]``.

With orjson installed (``fast``), each batch of complete events is decoded by orjson; a batch
it refuses is decoded again by the stdlib, so both give the same events. With msgspec installed
and ``typed=True`` (what ``load_trace`` asks for), a batch is first decoded into the typed
structs of ``typed.py`` (only the fields the tables read); a batch msgspec refuses is decoded
as dicts as above. Bounded memory on any
input: one value (an event or a top-level key) of more than ``limits.MAX_VALUE_CHARS``
characters, or nested deeper than the decoder's recursion limit, is a TraceError, and a syntax
error is reported where it is found, without reading the rest of the file into memory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from . import fast
from .errors import TraceError
from .files import iter_text
from .limits import MAX_VALUE_CHARS

_LOOKAHEAD = 1 << 20  # chars kept ahead of the cursor before decoding a value
_WS = re.compile(r"[ \t\n\r]*").match
_COMMA = re.compile(r"[ \t\n\r]*,[ \t\n\r]*").match
_scan = json.JSONDecoder().scan_once


class TextBatch(list):
    """A batch of decoded events that keeps its text (a JSON array) to be decoded again."""

    __slots__ = ("text",)

    def __init__(self, items, text: str):
        super().__init__(items)
        self.text = text


class TypedBatch(TextBatch):
    """Events as msgspec structs of ``typed.Event`` (only the fields the tables read)."""

    __slots__ = ()


class OrjsonBatch(TextBatch):
    """Events as dicts from orjson, which decodes integers beyond 64 bits as floats (the
    stdlib and msgspec keep them ints): the builder reads the text again with the stdlib when
    that could show (an Input Dims text with an exponent)."""

    __slots__ = ()


class RemoteBatch:
    """A batch handed to a worker (``parallel``): its text, checked to be a JSON array, and
    the number of items in it; the worker's rows come back to ``builder.build``."""

    __slots__ = ("text", "n", "worker", "seq")

    def __init__(self, text: str, n: int, worker, seq: int):
        self.text = text
        self.n = n
        self.worker = worker
        self.seq = seq


_raw_items = None  # msgspec's Raw-list decoder: a cut checked without decoding the events


def _remote(text: str, pool, b: "_Buffer", start: int, end: int) -> Optional[RemoteBatch]:
    """``text`` (the file's characters ``start:end`` in brackets) handed to a worker of
    ``pool`` when it is a JSON array (so the cut fell between two events); None when it is
    not, or no worker took it."""
    global _raw_items
    ms = fast.MSGSPEC
    if _raw_items is None:
        _raw_items = ms.json.Decoder(List[ms.Raw])
    try:
        n = len(_raw_items.decode(text))
    except (ValueError, RecursionError):  # not JSON for msgspec: the usual decoders decide
        return None
    taken = pool.submit(b.path, b.opened[0], b.base + start, b.base + end)
    return RemoteBatch(text, n, *taken) if taken is not None else None


class _Buffer:
    """A text window over the chunks of one file."""

    __slots__ = ("path", "chunks", "buf", "pos", "eof", "base", "opened")

    def __init__(self, path: Path):
        self.path = path
        self.opened: list = []            # the file's fstat, once opened
        self.chunks = iter_text(path, self.opened)
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.base = 0  # file offset (in chars) of buf[0]

    def fill(self) -> bool:
        """Append the next chunk (dropping consumed text); False at end of file."""
        if self.eof:
            return False
        try:
            chunk = next(self.chunks)
        except StopIteration:
            self.eof = True
            return False
        self.base += self.pos
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0
        return True

    def ensure(self) -> None:
        """Keep at least ``_LOOKAHEAD`` chars ahead of the cursor unless the file ends."""
        while len(self.buf) - self.pos < _LOOKAHEAD and self.fill():
            pass

    def skip_ws(self) -> str:
        """Move past whitespace; return the next char ('' at end of file)."""
        while True:
            self.pos = _WS(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def value(self, what: str) -> Any:
        """Decode one JSON value at the cursor, reading on while it runs past the buffer."""
        self.skip_ws()
        self.ensure()
        while True:
            try:
                obj, end = _scan(self.buf, self.pos)
                self.pos = end
                return obj
            except RecursionError:
                raise self.too_deep(what) from None
            except (StopIteration, ValueError) as exc:
                if not (_ran_out(self.buf, exc) and self.grow(what)):
                    raise self.error(what, exc) from None

    def grow(self, what: str) -> bool:
        """Read on until the text after the cursor doubles; False at end of file.

        Raises:
            TraceError: the value at the cursor is longer than ``MAX_VALUE_CHARS``.
        """
        target = min(2 * (len(self.buf) - self.pos), MAX_VALUE_CHARS + 1)
        parts = [self.buf[self.pos:]]                 # joined once: no copy per chunk
        have = len(parts[0])
        while have < target and not self.eof:
            try:
                chunk = next(self.chunks)
            except StopIteration:
                self.eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        grew = len(parts) > 1
        if grew:
            self.base += self.pos
            self.buf = "".join(parts)
            self.pos = 0
        del parts
        if len(self.buf) - self.pos > MAX_VALUE_CHARS:
            raise TraceError(f"{self.path}: {what} at character {self.base + self.pos:,} is "
                             f"longer than {MAX_VALUE_CHARS >> 20} MiB of text; refused (a "
                             "trace event is a few hundred bytes: is the file damaged?)")
        return grew

    def too_deep(self, what: str) -> TraceError:
        """A TraceError for a value nested deeper than the decoder's recursion limit."""
        return TraceError(f"{self.path}: {what} at character {self.base + self.pos:,} is "
                          "nested too deeply (arrays/objects inside each other beyond the "
                          "decoder's recursion limit); refused: is the file damaged?")

    def error(self, what: str, exc: Optional[BaseException] = None,
              truncated: Optional[bool] = None) -> TraceError:
        """A TraceError for malformed or truncated JSON at the cursor."""
        if truncated is None:   # the decoder failed at the very end of the whole text
            at = getattr(exc, "pos", None)
            if at is None and isinstance(exc, StopIteration) and exc.args:
                at = exc.args[0]
            truncated = (self.eof and isinstance(exc, (StopIteration, json.JSONDecodeError))
                         and (at is None or at >= len(self.buf) - 1
                              or getattr(exc, "msg", "").startswith("Unterminated string")))
        if truncated:
            return TraceError(f"{self.path}: JSON ends early while reading {what} "
                              "(truncated file?); re-copy or re-export the trace")
        if isinstance(exc, json.JSONDecodeError):
            detail = f" ({exc.msg})"
        elif isinstance(exc, ValueError):              # e.g. a 5,000-digit integer
            detail = f" ({str(exc)[:80]})"
        else:
            detail = ""
        near = self.buf[self.pos:self.pos + 40].replace("\n", " ")
        return TraceError(f"{self.path}: not valid JSON while reading {what}{detail} "
                          f"near {near!r}; is this a Chrome/Kineto trace?")


def iter_events(path: Path, meta: Dict[str, Any], typed: bool = False,
                pool=None) -> Iterator[List[Any]]:
    """Yield the items of the trace's event array in batches (lists of decoded items).

    Args:
        path: a trace file.
        typed: with msgspec installed, batches may be ``typed.TypedBatch`` lists of typed
            structs (only the fields the tables read) instead of lists of dicts.
        meta: filled with the top-level keys other than ``traceEvents`` (e.g.
            ``displayTimeUnit``, ``deviceProperties``, ``distributedInfo``) as they are met;
            complete once the generator is exhausted. ``meta["_has_events_key"]`` says whether
            an event list was found.
        pool: a ``parallel.Pool``: batches its workers have room for are yielded as
            ``RemoteBatch`` (handed to a worker) instead of decoded here.

    Raises:
        TraceError: the text is not JSON, is truncated, or holds no ``traceEvents`` list.
    """
    b = _Buffer(path)
    first = b.skip_ws()
    if first == "[":
        meta["_has_events_key"] = True
        yield from _array_items(b, typed, pool)
        _expect_end(b)
        return
    if first != "{":
        if first == "":
            raise TraceError(f"{path}: empty file (only whitespace); re-export the trace")
        raise b.error("the start of the file", truncated=False)
    b.pos += 1
    meta["_has_events_key"] = False
    if b.skip_ws() == "}":
        b.pos += 1
    else:
        while True:
            c = b.skip_ws()
            if c != '"':
                raise b.error("a top-level key", truncated=(c == ""))
            key = b.value("a top-level key")
            c = b.skip_ws()
            if c != ":":
                raise b.error(f"the top-level key {key!r}", truncated=(c == ""))
            b.pos += 1
            if key == "traceEvents" and b.skip_ws() == "[":
                meta["_has_events_key"] = True
                yield from _array_items(b, typed, pool)
            else:
                meta[key] = b.value(f"the top-level key {key!r}")
            c = b.skip_ws()
            b.pos += 1
            if c == "}":
                break
            if c != ",":
                b.pos -= 1
                raise b.error("the top-level object", truncated=(c == ""))
    _expect_end(b)


def _array_items(b: _Buffer, typed: bool = False, pool=None) -> Iterator[List[Any]]:
    """Yield batches (lists) of the items of the JSON array whose '[' is at the cursor.

    Fast path: cut the buffered text after its last ``},`` and decode the cut as one JSON
    array (``_loads``). A cut inside a string or a nested object cannot decode (the text before
    it would be an incomplete value), so a successful decode proves the cut fell between two
    items. With a ``pool`` whose workers have room, the cut's text is checked that way (as a
    list of raw values, not decoded) and handed to a worker (a ``RemoteBatch``). When a cut fails — or near the end of the array — items are decoded one at a time
    with the scanner up to the failed cut, then the fast path resumes.
    """
    b.pos += 1
    if b.skip_ws() == "]":
        b.pos += 1
        return
    scan, comma = _scan, _COMMA
    slow_until = -1                       # file offset: decode one by one up to here
    while True:
        if len(b.buf) - b.pos < _LOOKAHEAD:
            b.ensure()
        if b.base + b.pos > slow_until:
            cut = _last_cut(b.buf, b.pos)
            if cut <= b.pos:              # no cut in the buffer: one by one through it
                slow_until = b.base + len(b.buf)
            else:
                text = "".join(("[", b.buf[b.pos:cut + 1], "]"))   # 2 copies, not 3
                batch = None
                if pool is not None and b.opened and pool.wants(b.opened[0].st_size):
                    batch = _remote(text, pool, b, b.pos, cut + 1)
                if batch is None:
                    batch = _loads(text, typed)
                del text
                if batch is None:
                    slow_until = b.base + cut
                else:
                    yield batch
                    b.pos = cut + 2
                    b.skip_ws()
                    continue
        # slow path: one item
        try:
            obj, end = scan(b.buf, b.pos)
        except (StopIteration, ValueError, RecursionError):
            obj = b.value("an event")     # reads on and retries, or raises
            end = b.pos
        yield [obj]
        m = comma(b.buf, end)
        if m is not None:
            b.pos = m.end()
            continue
        b.pos = end
        c = b.skip_ws()
        if c == ",":
            b.pos += 1
            b.skip_ws()
        elif c == "]":
            b.pos += 1
            return
        else:
            raise b.error("the event list", truncated=(c == ""))


def _loads(text: str, typed: bool = False) -> Optional[List[Any]]:
    """``text`` (a JSON array) decoded by the first decoder installed that accepts it: with
    ``typed``, msgspec into typed structs (a TypedBatch); msgspec into dicts; orjson (an
    OrjsonBatch); the stdlib. None when none decodes it."""
    ms = fast.MSGSPEC
    if ms is not None:
        if typed:
            from .typed import decode

            batch = decode(text)
            if batch is not None:
                return TypedBatch(batch, text)
        try:
            return ms.json.decode(text)
        except (ValueError, RecursionError):  # msgspec.DecodeError is a ValueError
            pass
    if fast.ORJSON is not None:
        try:
            return OrjsonBatch(fast.ORJSON.loads(text), text)
        except (ValueError, RecursionError):
            pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _ran_out(buf: str, exc: BaseException) -> bool:
    """Whether a decode error may only mean that the value goes on past the end of ``buf``."""
    if isinstance(exc, StopIteration):
        at = exc.value if isinstance(exc.value, int) else 0
    elif isinstance(exc, json.JSONDecodeError):
        if exc.msg.startswith("Unterminated string"):
            return True
        at = exc.pos
    else:
        return False
    return at >= len(buf) - 16        # a cut number, literal or \uXXXX escape at the end


def _last_cut(buf: str, lo: int, tries: int = 8) -> int:
    """Index of the last ``}`` in ``buf[lo:]`` followed by ``,`` and then ``{`` (-1 if none)."""
    cut = buf.rfind("},", lo)
    while cut > lo and tries:
        nxt = _WS(buf, cut + 2).end()
        if nxt < len(buf) and buf[nxt] == "{":
            return cut
        cut = buf.rfind("},", lo, cut)
        tries -= 1
    return -1


def _expect_end(b: _Buffer) -> None:
    """Only whitespace may follow the top-level value."""
    if b.skip_ws() != "":
        raise b.error("the end of the file (extra data after the JSON value)", truncated=False)
