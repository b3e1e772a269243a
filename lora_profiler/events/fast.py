"""Optional accelerators: orjson (JSON decoding) and isal (gzip decompression).

Installed with ``pip install 'lora_profiler[fast]'``; without them the standard library does
the same work. Results are identical either way: a batch orjson cannot decode exactly as the
stdlib would (NaN/Infinity literals, lone surrogates, numbers out of float range, nesting past
its 1,024 levels) raises in orjson and is decoded again by the stdlib path, and isal inflates
the same bytes zlib does. Set ``LORA_PROFILER_PURE=1`` to use the standard library only.

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
if not os.environ.get("LORA_PROFILER_PURE"):
    try:
        import orjson as ORJSON  # noqa: N812
    except ImportError:
        pass
    else:
        _v = tuple(int(x) for x in ORJSON.__version__.split(".")[:3] if x.isdigit())
        if _v < (3, 9, 15):
            ORJSON = None
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
    """'orjson+isal', 'orjson', 'isal' or 'stdlib': which decoders this process uses."""
    used = [n for n, m in (("orjson", ORJSON), ("isal", ISAL_ZLIB)) if m is not None]
    return "+".join(used) or "stdlib"
