"""The paths to hash, lazily: files as named, directories walked, ``-`` read from stdin."""

from __future__ import annotations

import os
import sys
from typing import Iterator, Sequence

from .output import Failures


def walk_images(top: str, extensions, failures: Failures) -> Iterator[str]:
    """Image files under directory ``top``, depth first, entries sorted by name.

    Symbolic links to directories are followed unless they lead back to a
    directory already being walked (a loop); entries are matched on their
    lowercase suffix. Unreadable directories are reported and skipped.
    """
    try:
        st = os.stat(top)
    except OSError as exc:
        failures.report(top, f"cannot read directory ({exc.strerror or exc})")
        return

    def entries(folder: str):
        try:
            with os.scandir(folder) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            failures.report(folder, f"cannot read directory ({exc.strerror or exc})")
            return iter(())
        return iter(found)

    stack = [(top, entries(top), frozenset({(st.st_dev, st.st_ino)}))]
    while stack:
        folder, it, ancestors = stack[-1]
        entry = next(it, None)
        if entry is None:
            stack.pop()
            continue
        try:
            is_dir = entry.is_dir()  # follows symbolic links
        except OSError:
            is_dir = False
        if is_dir:
            try:
                sub = entry.stat()
            except OSError as exc:
                failures.report(entry.path, f"cannot read directory ({exc.strerror or exc})")
                continue
            key = (sub.st_dev, sub.st_ino)
            if key in ancestors:
                continue  # a symbolic link back into the tree being walked
            stack.append((entry.path, entries(entry.path), ancestors | {key}))
        elif os.path.splitext(entry.name)[1].lower() in extensions:
            yield entry.path


def iter_paths(paths: Sequence[str], extensions, failures: Failures, stdin=None) -> Iterator[str]:
    """Every path to hash, lazily: named files as given, directories expanded, ``-`` read from stdin."""

    def expand(path: str) -> Iterator[str]:
        if os.path.isdir(path):
            yield from walk_images(path, extensions, failures)
        else:
            yield path  # a named file whatever its extension; a missing one fails per item

    for path in paths:
        if path == "-":
            source = stdin or sys.stdin
            # Bytes decoded as the OS decodes file names, so no file name is undecodable.
            for line in getattr(source, "buffer", None) or source:
                line = (os.fsdecode(line) if isinstance(line, bytes) else line).rstrip("\r\n")
                if line.strip():
                    yield from expand(line)
        else:
            yield from expand(path)

