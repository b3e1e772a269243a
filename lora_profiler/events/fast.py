"""Optional accelerators: msgspec and orjson (JSON decoding), isal (gzip decompression).

Installed with ``pip install 'lora_profiler[fast]'``; without them the standard library does
the same work. Results are identical either way: a batch orjson cannot decode exactly as the
stdlib would (NaN/Infinity literals, lone surrogates, numbers out of float range, nesting past
its 1,024 levels) raises in orjson and is decoded again by the stdlib path, and isal inflates
the same bytes zlib does. msgspec decodes only the fields the tables read, into typed structs
(``typed.py``); a batch it refuses, or one holding an event its loop does not handle, is read
as dicts (orjson or the stdlib). Set ``LORA_PROFILER_PURE=1`` to use the standard library
only, or to a comma-separated list of the accelerators to leave out (``msgspec``,
``orjson``, ``isal``; benchmarks compare them so).

orjson before 3.9.15 has no nesting limit in ``loads`` (CVE-2024-27454: a deeply nested file
crashes the interpreter), so an older orjson is not used.

``loads`` and ``decompressobj`` are looked up at call time from this module, so a test can
switch paths with ``monkeypatch.setattr(fast, "ORJSON", None)``.
"""

from __future__ import annotations

import os
import zlib
from typing import Any, Optional, Tuple, Type

ORJSON: Optional[Any] = None
ISAL_ZLIB: Optional[Any] = None
MSGSPEC: Optional[Any] = None


def _left_out(value: str) -> set:
    """The accelerators ``LORA_PROFILER_PURE`` leaves out: all for 1 (or any other value), the
    listed ones for a list of names, none when unset, empty or 0."""
    names = {"msgspec", "orjson", "isal"}
    value = value.strip().lower()
    if value in ("", "0", "no", "false"):
        return set()
    listed = {p.strip() for p in value.split(",")}
    return listed if listed <= names else names


_OFF = _left_out(os.environ.get("LORA_PROFILER_PURE", ""))
if "msgspec" not in _OFF:
    try:
        import msgspec as MSGSPEC  # noqa: N812
    except ImportError:
        pass
    else:
        if tuple(int(x) for x in MSGSPEC.__version__.split(".")[:2] if x.isdigit()) < (0, 18):
            MSGSPEC = None  # Decoder(list[Struct]) with renamed fields and UNSET defaults
if "orjson" not in _OFF:
    try:
        import orjson as ORJSON  # noqa: N812
    except ImportError:
        pass
    else:
        _v = tuple(int(x) for x in ORJSON.__version__.split(".")[:3] if x.isdigit())
        if _v < (3, 9, 15):
            ORJSON = None
if "isal" not in _OFF:
    try:
        from isal import isal_zlib as ISAL_ZLIB  # noqa: N812
    except ImportError:
        pass


def decompressobj():
    """A gzip (wbits=31) decompressor: isal's when installed, else zlib's."""
    return (ISAL_ZLIB or zlib).decompressobj(wbits=31)


def zlib_errors() -> Tuple[Type[BaseException], ...]:
    """The exceptions a decompressor from ``decompressobj`` raises on corrupt data."""
    if ISAL_ZLIB is not None:
        return (zlib.error, ISAL_ZLIB.error)
    return (zlib.error,)


def describe() -> str:
    """'msgspec+orjson+isal', ..., 'isal' or 'stdlib': which decoders this process uses."""
    used = [n for n, m in (("msgspec", MSGSPEC), ("orjson", ORJSON), ("isal", ISAL_ZLIB))
            if m is not None]
    return "+".join(used) or "stdlib"
