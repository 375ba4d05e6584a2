"""Read-only, seekable file objects over part of another file, counting what they read.

The firmware readers stack these: the IPSW's stored member is a :class:`RangeFile`
over the zip, a GPT partition a :class:`RangeFile` over the disk. Nothing is
copied: every ``read`` goes to the file underneath at the right offset.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

from ..errors import FirmwareError

#: One read larger than this is refused: a corrupt length in an image must not allocate gigabytes.
MAX_READ = 256 << 20


class ReadOnlyFile(io.RawIOBase):
    """The common part: ``seek`` / ``tell`` / ``read`` / ``readinto`` over ``_pread(offset, size)``."""

    def __init__(self, size: int, name: str):
        super().__init__()
        self.size = size
        self.name = name
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def read(self, size: int = -1) -> bytes:
        remaining = max(0, self.size - self._pos)
        size = remaining if size is None or size < 0 else min(size, remaining)
        if size > MAX_READ:
            raise FirmwareError(f"{self.name}: a read of {size:,} bytes at offset {self._pos:,} exceeds the "
                                f"{MAX_READ >> 20} MiB limit (a corrupt length in the image?)")
        if size == 0:
            return b""
        data = self._pread(self._pos, size)
        if len(data) != size:
            raise FirmwareError(f"{self.name}: truncated: {size:,} bytes wanted at offset {self._pos:,}, "
                                f"{len(data):,} available")
        self._pos += size
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def _pread(self, offset: int, size: int) -> bytes:
        raise NotImplementedError


class CountingFile(ReadOnlyFile):
    """An OS file, counting the bytes read from it (the benchmark reports them)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self._fh: BinaryIO = open(self.path, "rb")
            size = os.fstat(self._fh.fileno()).st_size
        except OSError as exc:
            raise FirmwareError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        super().__init__(size, self.path)
        self.bytes_read = 0

    def _pread(self, offset: int, size: int) -> bytes:
        try:
            data = os.pread(self._fh.fileno(), size, offset)
        except OSError as exc:
            raise FirmwareError(f"{self.path}: read error at offset {offset:,} ({exc.strerror or exc})") from None
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._fh.close()
        super().close()


class RangeFile(ReadOnlyFile):
    """``length`` bytes of ``base`` from ``start`` (a stored zip member, a partition)."""

    def __init__(self, base: ReadOnlyFile, start: int, length: int, name: str):
        if start < 0 or length < 0 or start + length > base.size:
            raise FirmwareError(f"{name}: declares bytes {start:,}..{start + length:,}, past the end of "
                                f"{base.name} ({base.size:,} bytes): truncated or corrupt")
        super().__init__(length, name)
        self._base = base
        self._start = start

    def _pread(self, offset: int, size: int) -> bytes:
        self._base.seek(self._start + offset)
        return self._base.read(size)


class StreamFile(ReadOnlyFile):
    """A forward-only stream (a deflated zip member) made seekable: a backward seek starts it again.

    Slow for random access (every backward seek decompresses from the start), which is why
    stored members are read in place instead; Apple's IPSWs store their disk images.
    """

    def __init__(self, opener, size: int, name: str):
        super().__init__(size, name)
        self._opener = opener
        self._stream = opener()
        self._stream_pos = 0

    def _pread(self, offset: int, size: int) -> bytes:
        try:
            return self._stream_read(offset, size)
        except FirmwareError:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile raises BadZipFile, zlib.error, EOFError...
            raise FirmwareError(f"{self.name}: corrupt compressed data ({type(exc).__name__}: {exc})") from None

    def _stream_read(self, offset: int, size: int) -> bytes:
        if offset < self._stream_pos:
            self._stream.close()
            self._stream = self._opener()
            self._stream_pos = 0
        while self._stream_pos < offset:
            skipped = self._stream.read(min(offset - self._stream_pos, 1 << 20))
            if not skipped:
                return b""
            self._stream_pos += len(skipped)
        data = self._stream.read(size)
        self._stream_pos += len(data)
        return data
