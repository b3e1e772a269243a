"""The one exception the events engine raises for input it cannot read."""

from __future__ import annotations


class TraceError(ValueError):
    """A trace file or folder that cannot be read as a Chrome/Kineto trace.

    The message names the file and says what to do about it; command-line entry points print it
    as one line and exit with status 2.
    """
