"""Bounds on what a trace may contain: values outside them are malformed input, not data.

A trace is untrusted text. Every number that reaches a table must be one the analyses can add,
subtract and average without overflow or a numpy warning, and every structure the reader holds
in memory must have a size that does not depend on how the file was crafted:

- times: Chrome-trace ``ts`` / ``dur`` are microseconds. A timestamp must be finite with
  ``|ts| < 2**62`` ns (about 146 years from the clock's origin; epoch-based Kineto timestamps
  are about 1.7e15 us); a duration must be finite, ``>= 0`` and at most 7 days. Events outside
  are skipped with a reason, so sums over millions of events stay far from float64 overflow.
- ids (pid, tid, External id, correlation, Sequence number, stream, device, bytes, the
  allocator's counters): whole numbers with ``|x| <= 2**53``, the range float64 holds exactly
  (the loader's row buffers are float64). Booleans are not numbers.
- one JSON value (an event, or a top-level key such as ``deviceProperties``) may hold at most
  ``MAX_VALUE_CHARS`` characters of text; larger is refused with a TraceError instead of
  being buffered. The event list itself is streamed and has no length limit (memory grows by
  a few dozen bytes per kept event).
- JSON nesting: the stdlib decoder is given recursion headroom for ``JSON_DEPTH`` levels
  (more than orjson's fixed 1,024, so both paths read the same files); deeper is refused with
  a TraceError, never a RecursionError traceback or a crash. Intervals (ops, scopes) nested
  more than 32,767 deep on one thread are refused too (the int16 depth column).
"""

from __future__ import annotations

MAX_ABS_TS_US = float(2 ** 62) / 1e3        # |ts| bound, us (2**62 ns)
MAX_DUR_US = 7 * 86400 * 1e6                 # dur bound, us (7 days)
MAX_ID = float(2 ** 53)                      # |id| bound: exact in float64
MAX_VALUE_CHARS = 64 << 20                   # one JSON value's text, characters
JSON_DEPTH = 1200                            # nesting levels the stdlib decoder may reach
