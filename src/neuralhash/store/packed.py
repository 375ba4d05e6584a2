"""The packed index beside a hash database: ``DB.nhindex``, memory-mapped columns.

One file: a 4 KiB header, then five columns of ``capacity`` entries each, in
row-id order (row ids only grow: the store hands them out itself):

==========  ======  =============================================================
``rowid``   int64   the row's id in the ``images`` table
``pkey``    int64   a 64-bit key of the name's bytes (crc32 and adler32), to find
                    rows by name without an index in SQLite; equal keys are
                    always confirmed by comparing the names themselves
``hi``      uint64  hash bits 0-63 (:func:`neuralhash.matching.to_words`)
``lo``      uint32  hash bits 64-95
``list``    int32   the row's list; -1 once the row is deleted (a tombstone)
==========  ======  =============================================================

The header holds the database's uuid and the *generation* of the rows the
columns describe. Every write transaction of the store bumps the generation
in SQLite (``meta``) and, before it commits, appends its new rows past the
header's count, marks the header dirty before any tombstone is written in
place, then writes the new count and generation (clean) and syncs. A crash
anywhere in between leaves a header whose generation or dirty flag disagrees
with the database, and the file is rebuilt from the rows: never used silently.
Readers only look at entries below the header's count, so appends do not
disturb them; a rewrite (growth past capacity, rebuild) goes to a new file
renamed over the old one, and open maps keep the old inode.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import NeuralHashError

MAGIC = b"NHINDEX1"
HEADER = 4096
_FIELDS = struct.Struct("<8s16sQQQQ")  # magic, uuid, generation, n, capacity, dirty
_COLUMNS = (("rowid", np.int64), ("pkey", np.int64), ("hi", np.uint64), ("lo", np.uint32), ("list", np.int32))
ENTRY_BYTES = sum(np.dtype(t).itemsize for _, t in _COLUMNS)
DELETED = -1


class PackedError(NeuralHashError):
    """The packed index file is missing, foreign, torn or stale (the store rebuilds it)."""


def name_keys(raw_names: list[bytes]) -> np.ndarray:
    """The 64-bit key (int64) of each name's bytes: crc32 in the high half, adler32 in the low.

    Not a unique id: equal keys only say "compare these names" (two checksums make
    such false alarms rare, and computing them costs ~0.1 us a name).
    """
    n = len(raw_names)
    crc = np.fromiter(map(zlib.crc32, raw_names), np.uint64, n)
    adl = np.fromiter(map(zlib.adler32, raw_names), np.uint64, n)
    return ((crc << np.uint64(32)) | adl).view(np.int64)


@dataclass
class Header:
    uuid: bytes
    generation: int
    n: int
    capacity: int
    dirty: bool

    def pack(self) -> bytes:
        body = _FIELDS.pack(MAGIC, self.uuid, self.generation, self.n, self.capacity, int(self.dirty))
        return body + struct.pack("<I", zlib.crc32(body))


def _offsets(capacity: int) -> dict[str, int]:
    out, pos = {}, HEADER
    for name, dtype in _COLUMNS:
        out[name] = pos
        pos += capacity * np.dtype(dtype).itemsize
    out["end"] = pos
    return out


def read_header(fd: int, where: str) -> Header:
    raw = os.pread(fd, _FIELDS.size + 4, 0)
    if len(raw) < _FIELDS.size + 4:
        raise PackedError(f"{where}: truncated header")
    body, (crc,) = raw[:_FIELDS.size], struct.unpack("<I", raw[_FIELDS.size:])
    if zlib.crc32(body) != crc:
        raise PackedError(f"{where}: header checksum mismatch")
    magic, uuid, gen, n, cap, dirty = _FIELDS.unpack(body)
    if magic != MAGIC:
        raise PackedError(f"{where}: not a neuralhash packed index")
    if n > cap or os.fstat(fd).st_size < _offsets(cap)["end"]:
        raise PackedError(f"{where}: shorter than its header says")
    return Header(uuid, gen, n, cap, bool(dirty))


class PackedFile:
    """An open packed index: the header and the columns as arrays over a shared map."""

    def __init__(self, path: str, *, writable: bool):
        self.path = path
        self.writable = writable
        flags = os.O_RDWR if writable else os.O_RDONLY
        try:
            self.fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise PackedError(f"{path}: absent") from None
        except OSError as exc:
            raise PackedError(f"{path}: cannot open ({exc.strerror or exc})") from None
        try:
            self.header = read_header(self.fd, path)
            self.inode = os.fstat(self.fd).st_ino
            self._map()
        except BaseException:
            os.close(self.fd)
            raise

    def _map(self) -> None:
        offsets = _offsets(self.header.capacity)
        # Read-only map: writes go through pwrite (coherent with the map through the page cache).
        self._mm = mmap.mmap(self.fd, offsets["end"], access=mmap.ACCESS_READ)
        self.columns = {
            name: np.frombuffer(self._mm, dtype=dtype, count=self.header.capacity, offset=offsets[name])
            for name, dtype in _COLUMNS
        }

    def column(self, name: str, n: int | None = None) -> np.ndarray:
        return self.columns[name][: self.header.n if n is None else n]

    def refresh_header(self) -> Header:
        self.header = read_header(self.fd, self.path)
        return self.header

    def same_file(self) -> bool:
        """Whether ``path`` still names the file this maps (a rewrite renames a new one over it)."""
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def close(self) -> None:
        # The map is not closed: arrays (a matcher's, another thread's) may still view it; it goes
        # away with the last of them.
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- writing (under the database's write lock) ----------------------------------------

    def write_header(self, header: Header, *, sync: bool) -> None:
        os.pwrite(self.fd, header.pack(), 0)
        if sync:
            os.fdatasync(self.fd)
        self.header = header

    def mark_dirty(self) -> None:
        if not self.header.dirty:
            h = self.header
            self.write_header(Header(h.uuid, h.generation, h.n, h.capacity, True), sync=True)


def write_new(path: str, header: Header, cols: dict[str, np.ndarray] | None) -> None:
    """A complete packed file at ``path`` (written beside it, synced, renamed over it)."""
    tmp = f"{path}.tmp{os.getpid()}"
    offsets = _offsets(header.capacity)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        os.ftruncate(fd, offsets["end"])
        if cols is not None and header.n:
            mm = mmap.mmap(fd, offsets["end"])
            try:
                for name, dtype in _COLUMNS:
                    dest = np.frombuffer(mm, dtype=dtype, count=header.n, offset=offsets[name])
                    dest[:] = cols[name][: header.n]
                    del dest
                mm.flush()
            finally:
                mm.close()
        os.pwrite(fd, header.pack(), 0)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def column_names() -> list[str]:
    return [name for name, _ in _COLUMNS]
