"""The paths to hash, lazily: files as named, directories walked, ``-`` read from stdin."""

from __future__ import annotations

import os
import sys
from typing import Iterator, Sequence

from ..files.walk import walk_images
from .output import Failures


def _null_separated(stream, chunk: int = 1 << 16) -> Iterator[bytes]:
    """The NUL-terminated names of a byte stream (``find -print0``), read a chunk at a time."""
    rest = b""
    while True:
        data = stream.read(chunk)
        if not data:
            break
        parts = (rest + data).split(b"\0")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest  # a last name without its NUL


def iter_paths(paths: Sequence[str], extensions, failures: Failures, stdin=None, *,
               null: bool = False) -> Iterator[str]:
    """Every path to hash, lazily: named files as given, directories expanded, ``-`` read from stdin
    (one name a line, or with ``null`` NUL-separated, so that any name can be given, newlines included)."""

    def expand(path: str) -> Iterator[str]:
        if os.path.isdir(path):
            # An unreadable folder never reaches the hasher: it is an error record of its own.
            yield from walk_images(path, extensions, failures.unlisted)
        else:
            yield path  # a named file whatever its extension; a missing one fails per item

    for path in paths:
        if path == "-" and null:
            source = stdin or sys.stdin
            for raw in _null_separated(getattr(source, "buffer", None) or source):
                if raw:
                    yield from expand(os.fsdecode(raw))
        elif path == "-":
            source = stdin or sys.stdin
            # Bytes decoded as the OS decodes file names, so no file name is undecodable.
            for line in getattr(source, "buffer", None) or source:
                line = os.fsdecode(line) if isinstance(line, bytes) else line
                # One name a line: its \n, and one \r before it (a list written on Windows), go; the
                # rest is the name, spaces included (neuralhash.files.pathnames' text rule).
                line = line[:-1] if line.endswith("\n") else line
                line = line[:-1] if line.endswith("\r") else line
                if line.strip():
                    yield from expand(line)
        else:
            yield from expand(path)

