"""APFS containers through dissect.apfs (the optional ``extract`` extra, AGPL-3.0).

dissect.apfs reads containers, volumes, snapshots, sealed system volumes and
transparent compression (decmpfs) from a file object; this module adapts it:

- its LZFSE goes through the ``lzfse`` binding instead of dissect.util's
  pure-Python decoder (about 2 s per MiB, and it fails on dense streams of
  200 KB or more): :func:`_route_lzfse` replaces the ``lzfse`` module that
  ``dissect.apfs.stream`` decodes decmpfs chunks with. LZVN chunks stay on
  dissect's own decoder (the binding decodes whole LZFSE streams only).
- B-tree nodes and volume superblocks are checked against their
  Fletcher-64 checksums when read (dissect checks only the container's
  superblocks), so a damaged image is refused instead of read wrong.
- a child B-tree node must be one level below its parent (no cycles);
- a file is read from its extents a read at a time, not a whole extent per read (see
  :func:`_read_only_what_is_asked`);
- every error it raises becomes one :class:`FirmwareError` line naming the image.
"""

from __future__ import annotations

import contextlib
import types
from typing import BinaryIO, Iterator

from ..errors import FirmwareError, install_hint
from . import codecs
from .rangefile import MAX_READ
from .trees import Entry, Tree

EXTRA_HINT = install_hint("extract")
#: A decmpfs chunk may decode to at most this (fork chunks are 64 KiB; an xattr holds a small file whole).
MAX_DECMPFS_CHUNK = 64 << 20

_patched = False


def _dissect():
    """dissect.apfs, imported and adapted once; a one-line error naming the extra when it is missing."""
    global _patched
    try:
        import dissect.apfs
        import dissect.apfs.stream
        from dissect.apfs.objects.btree import BTree
        from dissect.apfs.objects.btree_node import BTreeNode
        from dissect.apfs.objects.fs import FS
    except ImportError:
        raise FirmwareError(f"reading APFS needs the optional 'extract' extra (dissect.apfs, AGPL-3.0): "
                            f"{EXTRA_HINT}") from None
    if not _patched:
        _route_lzfse(dissect.apfs.stream)
        for cls in (BTreeNode, FS):  # container object maps: dissect checks them, falling back
            _check_checksums(cls)
        _check_levels(BTree)
        _read_only_what_is_asked(dissect.apfs.stream.FileStream)
        _patched = True
    return dissect.apfs


def _route_lzfse(stream_module) -> None:
    def decompress(data) -> bytes:
        return codecs.lzfse_decompress(bytes(data), MAX_DECMPFS_CHUNK, "decmpfs LZFSE chunk")

    stream_module.lzfse = types.SimpleNamespace(decompress=decompress)


def _check_checksums(cls) -> None:
    original = cls.__init__

    def checked_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        # Encrypted objects are checked after decryption by dissect itself; headerless nodes have no checksum.
        no_header = cls.__name__ == "BTreeNode" and self.object.btn_flags & 0x0010
        if self.cipher is None and not no_header and not self.is_valid():
            raise FirmwareError(f"{cls.__name__} at block {self.address}: checksum mismatch")

    cls.__init__ = checked_init


def _check_levels(btree_cls) -> None:
    """A child node must be one level below its parent: a damaged tree whose node points at itself (or up)
    would otherwise send dissect's search round in circles for ever."""
    original = btree_cls._node_child

    def checked_child(self, node, idx, *args, **kwargs):
        child = original(self, node, idx, *args, **kwargs)
        if child.level != node.level - 1:
            raise FirmwareError(f"B-tree node at block {child.address}: level {child.level} under a node of "
                                f"level {node.level}: corrupt")
        return child

    btree_cls._node_child = checked_child


def _read_only_what_is_asked(stream_cls) -> None:
    """dissect's FileStream reads a file's whole extent for every aligned read and then slices it: reading
    a 7 MB single-extent file in 1 MiB steps read 50 MB, and a large file quadratically more. This reads
    only the bytes asked, from the extent's block on (unencrypted volumes; encrypted ones are refused)."""
    original = stream_cls._read

    def _read(self, offset: int, length: int) -> bytes:
        if self.volume.is_encrypted:
            return original(self, offset, length)
        if length > MAX_READ:
            raise FirmwareError(f"file {self.oid}: a read of {length:,} bytes (limit {MAX_READ >> 20} MiB): "
                                "a corrupt size?")
        container = self.volume.container
        parts = []
        while length > 0:
            logical, physical, extent_length, _ = self._lookup(offset)
            into = offset - logical
            n = min(length, extent_length - into)
            if n <= 0:
                raise FirmwareError(f"file {self.oid}: no extent holds offset {offset:,}")
            if physical == 0:  # a hole in a sparse file
                parts.append(bytes(n))
            else:
                container.fh.seek(physical * container.block_size + into)
                parts.append(container.fh.read(n))
            offset += n
            length -= n
        return b"".join(parts)

    stream_cls._read = _read


@contextlib.contextmanager
def apfs_errors(where: str):
    """dissect's errors (its own, struct, KeyError, EOF...) as one FirmwareError line naming ``where``."""
    try:
        yield
    except FirmwareError as exc:
        text = str(exc)
        raise FirmwareError(text if text.startswith(where) else f"{where}: {text}") from None
    except Exception as exc:  # noqa: BLE001 - a damaged image makes the reader fail in arbitrary ways
        raise FirmwareError(f"{where}: corrupt or unsupported APFS ({type(exc).__name__}: {exc})") from None


class Container:
    """An APFS container read from ``fh``; the newest checkpoint whose checksums hold is used."""

    def __init__(self, fh: BinaryIO, name: str):
        apfs = _dissect()
        self.name = name
        with apfs_errors(name):
            self._apfs = apfs.APFS(fh)
            self.xid = self._apfs.sb.xid
            # dissect falls back past damaged checkpoints: say so (the newest one it saw, for the report).
            self.newest_xid = max([self.xid, *(sb.xid for sb in self._apfs.sbs)])
            self.volumes = list(self._apfs.volumes)

    @property
    def description(self) -> str:
        text = f"APFS (checkpoint xid {self.xid}"
        if self.newest_xid > self.xid:
            text += f"; newer checkpoints up to xid {self.newest_xid} are damaged and were skipped"
        return text + ")"

    def trees(self, snapshot: str | None = None, *, snapshots: bool = True) -> Iterator[Tree | "EncryptedVolume"]:
        """The volumes' live trees (the System role first), then their snapshots (newest first).

        ``snapshot``: only the snapshot of that name in each volume holding one.
        """
        with apfs_errors(self.name):
            order = sorted(self.volumes, key=lambda fs: (role_name(fs) != "system", fs.index))
        for fs in order:
            with apfs_errors(self.name):
                if fs.is_encrypted:
                    yield EncryptedVolume(self.name, fs.name)
                    continue
                if snapshot is None:
                    yield VolumeTree(self.name, fs, None)
        if snapshot is None and not snapshots:
            return
        for fs in order:
            with apfs_errors(self.name):
                if fs.is_encrypted:
                    continue
                snaps = sorted(fs.snapshots, key=lambda s: s.xid, reverse=True)
                for snap in snaps:
                    if snapshot is None or snap.name == snapshot:
                        yield VolumeTree(self.name, snap.open(), snap.name)


def role_name(fs) -> str:
    try:
        return fs.role.name.lower() if fs.role.name else str(int(fs.role))
    except Exception:  # noqa: BLE001 - an unknown role value
        return "unknown"


class EncryptedVolume:
    """A FileVault-encrypted volume: listed, not searched (this reader does not decrypt)."""

    def __init__(self, image: str, volume: str):
        self.label = f"volume {volume!r}"
        self.volume = volume


class VolumeTree(Tree):
    def __init__(self, image: str, fs, snapshot: str | None):
        self.fs = fs
        self.volume = fs.name
        self.snapshot = snapshot
        self.label = f"{image}: volume {fs.name!r}" + (f" snapshot {snapshot!r}" if snapshot else "")

    @staticmethod
    def _kind(inode) -> str:
        return ("dir" if inode.is_dir() else "file" if inode.is_file() else
                "link" if inode.is_symlink() else "other")

    def root(self) -> Entry:
        with apfs_errors(self.label):
            return Entry("dir", self.fs.root)

    def child(self, directory: Entry, name: str) -> Entry | None:
        from dissect.apfs.exception import FileNotFoundError as NotFound

        with apfs_errors(self.label):
            try:
                inode = self._inode(directory).get(name).inode
            except NotFound:
                return None
            return Entry(self._kind(inode), inode)

    def children(self, directory: Entry) -> Iterator[tuple[str, Entry]]:
        with apfs_errors(self.label):
            entries = list(self._inode(directory).iterdir())
        for dirent in entries:
            with apfs_errors(self.label):
                kind = ("dir" if dirent.is_dir() else "file" if dirent.is_file() else
                        "link" if dirent.is_symlink() else "other")
                yield dirent.name, Entry(kind, dirent)

    def readlink(self, link: Entry) -> str:
        with apfs_errors(self.label):
            return self._inode(link).readlink()

    @staticmethod
    def _inode(entry: Entry):
        """An entry's inode: found by name it is one; listed by ``children`` it is a directory entry."""
        return entry.handle.inode if hasattr(entry.handle, "file_id") else entry.handle

    def size(self, file: Entry) -> int:
        with apfs_errors(self.label):
            return int(self._inode(file).size)

    def open(self, file: Entry) -> BinaryIO:
        with apfs_errors(self.label):
            return _GuardedStream(self._inode(file).open(), self.label)


class _GuardedStream:
    """A dissect stream whose read errors are FirmwareErrors."""

    def __init__(self, stream, label: str):
        self._stream, self._label = stream, label

    def read(self, size: int = -1) -> bytes:
        with apfs_errors(self._label):
            return self._stream.read(size)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
