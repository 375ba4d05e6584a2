"""File trees to search: an APFS volume (live or a snapshot) or a folder, behind one small interface.

:func:`resolve` walks a path through a tree, following symbolic links the way
the system that owns the tree would, but always inside the tree: an absolute
link target starts again at the tree's root, and ``..`` stops at the root.
So ``Vision.framework/Resources -> Versions/Current/Resources`` resolves within
an image, and a link to ``/etc/passwd`` in an image never reads this machine's.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from ..errors import FirmwareError

MAX_LINKS = 40


@dataclass(frozen=True)
class Entry:
    kind: str  # "dir", "file", "link", "other"
    handle: Any


class Tree:
    """A read-only file tree. ``label`` says where it is (a volume and snapshot, or a folder)."""

    label: str
    volume: str | None = None
    snapshot: str | None = None

    def root(self) -> Entry: ...

    def child(self, directory: Entry, name: str) -> Entry | None: ...

    def children(self, directory: Entry) -> Iterator[tuple[str, Entry]]: ...

    def readlink(self, link: Entry) -> str: ...

    def size(self, file: Entry) -> int: ...

    def open(self, file: Entry) -> BinaryIO: ...


def resolve(tree: Tree, path: str, *, follow_last: bool = True) -> Entry | None:
    """The entry at ``path`` (``/``-separated, from the tree's root), or None when there is none."""
    stack = [tree.root()]
    parts = [p for p in path.split("/") if p not in ("", ".")]
    links = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if len(stack) > 1:
                stack.pop()
            continue
        current = stack[-1]
        if current.kind != "dir":
            return None
        entry = tree.child(current, name)
        if entry is None:
            return None
        if entry.kind == "link" and (parts or follow_last):
            links += 1
            if links > MAX_LINKS:
                raise FirmwareError(f"{tree.label}: more than {MAX_LINKS} symbolic links resolving {path}")
            target = tree.readlink(entry)
            if target.startswith("/"):
                stack = [tree.root()]
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        stack.append(entry)
    return stack[-1]


class FolderTree(Tree):
    """A folder: an extracted or mounted file system, or a Mac's ``/``."""

    def __init__(self, root: Path):
        self.path = root
        self.label = f"folder {root}"

    def _entry(self, path: Path) -> Entry | None:
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None
        kind = ("dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode)
                else "link" if stat.S_ISLNK(mode) else "other")
        return Entry(kind, path)

    def root(self) -> Entry:
        return Entry("dir", self.path)

    def child(self, directory: Entry, name: str) -> Entry | None:
        return self._entry(directory.handle / name)

    def children(self, directory: Entry) -> Iterator[tuple[str, Entry]]:
        try:
            names = sorted(os.listdir(directory.handle))
        except OSError:
            return
        for name in names:
            entry = self._entry(directory.handle / name)
            if entry is not None:
                yield name, entry

    def readlink(self, link: Entry) -> str:
        return os.readlink(link.handle)

    def size(self, file: Entry) -> int:
        return os.stat(file.handle).st_size

    def open(self, file: Entry) -> BinaryIO:
        try:
            return open(file.handle, "rb")
        except OSError as exc:
            raise FirmwareError(f"{file.handle}: cannot read ({exc.strerror or exc})") from None
