"""Finding the image files under a directory, in a stable order (the CLI and the Dask client share it)."""

from __future__ import annotations

import os
import stat
from typing import Callable, Iterator


def walk_images(top: str, extensions, on_error: Callable[[str, str], None]) -> Iterator[str]:
    """Image files under directory ``top``, depth first, entries sorted by name.

    Symbolic links to directories are followed unless they lead back to a
    directory already being walked (a loop); entries are matched on their
    lowercase suffix; only regular files are listed (a FIFO, socket or device is skipped). An unreadable directory is passed to ``on_error(path, reason)``
    (which may raise) and skipped.
    """
    try:
        st = os.stat(top)
    except OSError as exc:
        on_error(top, f"cannot read directory ({exc.strerror or exc})")
        return

    def entries(folder: str):
        try:
            with os.scandir(folder) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            on_error(folder, f"cannot read directory ({exc.strerror or exc})")
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
                on_error(entry.path, f"cannot read directory ({exc.strerror or exc})")
                continue
            key = (sub.st_dev, sub.st_ino)
            if key in ancestors:
                continue  # a symbolic link back into the tree being walked
            stack.append((entry.path, entries(entry.path), ancestors | {key}))
        elif os.path.splitext(entry.name)[1].lower() in extensions:
            try:
                mode = entry.stat().st_mode  # follows symbolic links
            except OSError:
                yield entry.path  # a dangling link, a vanished file: the reader names the reason
                continue
            # Regular files only, as `find -type f`: opening a FIFO named *.png blocked the whole
            # run for ever, and a device or socket is no image.
            if stat.S_ISREG(mode):
                yield entry.path
