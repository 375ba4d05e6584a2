"""UDIF disk images (``.dmg``): the decompressed disk as a lazy, seekable file object.

Layout (big-endian): a 512-byte ``koly`` trailer at the end of the file points
at the data fork and an XML property list whose ``resource-fork`` / ``blkx``
entries each hold a ``mish`` table: runs of sectors and where their
(compressed) bytes are in the data fork. :class:`UdifDisk` reads and decodes
only the chunks a read touches, keeping a few decoded chunks in a small LRU
cache, so a reader of the APFS inside touches a tiny part of a 10 GB image.

Checks: the trailer's fields must lie inside the file, every chunk inside the
data fork and the disk, every chunk must decode to exactly its sectors; the
trailer's master checksum (a CRC32 of the tables' checksums) is always checked;
the data fork's CRC32 and each ``blkx`` table's CRC32 of its decoded sectors
are checked for disks up to :data:`CRC_CHECK_LIMIT` bytes, where they cost
one read of the file (a real IPSW's image is read lazily instead, and relies on
the chunk checks, zlib/bzip2/LZMA's own checksums and APFS's checksums).
"""

from __future__ import annotations

import bisect
import plistlib
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass

from ..errors import FirmwareError
from . import codecs
from .rangefile import ReadOnlyFile

SECTOR = 512
KOLY_SIZE = 512
#: The XML property list is read whole: larger is refused (real ones are well under 1 MiB).
MAX_PLIST = 64 << 20
#: One chunk may decode to at most this (hdiutil writes 1 MiB chunks at most).
MAX_CHUNK = 64 << 20
#: Decoded chunks kept in memory, in bytes.
CACHE_BYTES = 32 << 20
#: Images whose disk is at most this big get their data fork and blkx CRC32s checked when they are opened.
CRC_CHECK_LIMIT = 64 << 20

ZERO_FILL, RAW, IGNORE, ADC, ZLIB, BZIP2, LZFSE, LZMA = (0x00000000, 0x00000001, 0x00000002, 0x80000004,
                                                        0x80000005, 0x80000006, 0x80000007, 0x80000008)
COMMENT, TERMINATOR = 0x7FFFFFFE, 0xFFFFFFFF
CHUNK_NAMES = {ZERO_FILL: "zero-fill", RAW: "raw", IGNORE: "ignored", ADC: "ADC", ZLIB: "zlib", BZIP2: "bzip2",
               LZFSE: "LZFSE", LZMA: "LZMA"}
_DECODERS = {ADC: codecs.adc_decompress, ZLIB: codecs.zlib_decompress, BZIP2: codecs.bzip2_decompress,
             LZFSE: codecs.lzfse_decompress, LZMA: codecs.lzma_decompress}


@dataclass(frozen=True)
class Chunk:
    sector: int  # first sector on the disk
    sectors: int
    kind: int
    offset: int  # in the file
    length: int


@dataclass(frozen=True)
class Partition:
    """One ``blkx`` entry: a named run of sectors (hdiutil's "Apple_APFS : 4", "GPT Header"...)."""

    name: str
    sector: int
    sectors: int
    crc32: int | None  # of its decoded sectors, when the mish table holds one


class UdifDisk(ReadOnlyFile):
    """The disk a UDIF image holds, read lazily. ``fh``: the image file (or a stored zip member)."""

    def __init__(self, fh: ReadOnlyFile, name: str | None = None):
        name = name or fh.name
        self._fh = fh
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cached_bytes = 0
        fh.seek(fh.size - KOLY_SIZE)
        koly = fh.read(KOLY_SIZE)
        if koly[:4] != b"koly":
            raise FirmwareError(f"{name}: not a UDIF image (no koly trailer)")
        (_, version, header_size, _flags, _running, data_offset, data_length, _rsrc_offset, _rsrc_length) = \
            struct.unpack_from(">4sIIIQQQQQ", koly, 0)
        checksum_type, checksum_bits = struct.unpack_from(">II", koly, 80)
        (data_crc,) = struct.unpack_from(">I", koly, 88)
        xml_offset, xml_length = struct.unpack_from(">QQ", koly, 216)
        master_type, master_bits = struct.unpack_from(">II", koly, 352)
        (master_crc,) = struct.unpack_from(">I", koly, 360)
        (sector_count,) = struct.unpack_from(">Q", koly, 492)
        if header_size != KOLY_SIZE or version != 4:
            raise FirmwareError(f"{name}: UDIF trailer of version {version}, size {header_size}: not a UDIF image "
                                "this reader knows (version 4, 512 bytes)")
        body = fh.size - KOLY_SIZE
        if data_offset + data_length > body:
            raise FirmwareError(f"{name}: the UDIF data fork ({data_offset:,}+{data_length:,}) runs past the end "
                                f"of the file ({fh.size:,} bytes): truncated or corrupt")
        if xml_length == 0:
            raise FirmwareError(f"{name}: UDIF image without a property list (an old NDIF-style image is not "
                                "supported)")
        if xml_offset + xml_length > body or xml_length > MAX_PLIST:
            raise FirmwareError(f"{name}: the UDIF property list ({xml_offset:,}+{xml_length:,}) is past the end "
                                f"of the file or larger than {MAX_PLIST >> 20} MiB: truncated or corrupt")
        super().__init__(sector_count * SECTOR, name)
        self._data_offset, self._data_length = data_offset, data_length
        fh.seek(xml_offset)
        self.partitions, self.chunks = self._read_plist(fh.read(xml_length), data_offset, data_length)
        self._starts = [c.sector for c in self.chunks]
        if master_type == 2 and master_bits == 32:
            self._check_master(master_crc)
        if self.size <= CRC_CHECK_LIMIT:  # a small disk: checked whole (a large one is read lazily)
            if checksum_type == 2 and checksum_bits == 32:
                self._check_crc(data_crc)
            self._check_partitions()

    def _read_plist(self, xml: bytes, data_offset: int, data_length: int):
        name = self.name
        try:
            plist = plistlib.loads(xml)
            entries = plist["resource-fork"]["blkx"]
            if not isinstance(entries, list):
                raise TypeError("blkx is not a list")
        except Exception as exc:  # noqa: BLE001 - plistlib raises many types on bad input
            raise FirmwareError(f"{name}: unreadable UDIF property list ({type(exc).__name__}: {exc})") from None
        partitions, chunks = [], []
        self._mish_checksums: list[bytes] = []
        total_sectors = self.size // SECTOR
        for index, entry in enumerate(entries):
            label = f"{name}: blkx entry {index}"
            data = entry.get("Data") if isinstance(entry, dict) else None
            if not isinstance(data, bytes) or len(data) < 204 or data[:4] != b"mish":
                raise FirmwareError(f"{label}: not a mish table")
            first, count, table_offset = struct.unpack_from(">QQQ", data, 8)
            (n_chunks,) = struct.unpack_from(">I", data, 200)
            if 204 + 40 * n_chunks > len(data):
                raise FirmwareError(f"{label}: mish table declares {n_chunks:,} chunks, holds "
                                    f"{(len(data) - 204) // 40}")
            if first + count > total_sectors:
                raise FirmwareError(f"{label}: sectors {first:,}+{count:,} past the disk's {total_sectors:,}")
            crc_type, crc_bits, crc = struct.unpack_from(">III", data, 64)
            self._mish_checksums.append(data[72:76])
            partitions.append(Partition(str(entry.get("Name") or entry.get("CFName") or ""), first, count,
                                        crc if (crc_type, crc_bits) == (2, 32) else None))
            for i in range(n_chunks):
                kind, _comment, sector, sectors, offset, length = struct.unpack_from(">IIQQQQ", data, 204 + 40 * i)
                if kind in (COMMENT, TERMINATOR) or sectors == 0:
                    continue
                where = f"{name}: chunk at disk offset {(first + sector) * SECTOR:,}"
                if kind not in CHUNK_NAMES:
                    raise FirmwareError(f"{where}: unknown chunk type {kind:#010x}")
                if sector + sectors > count:
                    raise FirmwareError(f"{where}: runs past its blkx entry")
                if kind not in (ZERO_FILL, IGNORE):
                    start = data_offset + table_offset + offset
                    if table_offset + offset + length > data_length:
                        raise FirmwareError(f"{where}: its data ({start:,}+{length:,}) is past the data fork: "
                                            "truncated or corrupt")
                    if kind != RAW and (sectors * SECTOR > MAX_CHUNK or length > MAX_CHUNK):
                        raise FirmwareError(f"{where}: a {CHUNK_NAMES[kind]} chunk of {sectors * SECTOR:,} bytes "
                                            f"(limit {MAX_CHUNK >> 20} MiB)")
                    if kind == RAW and length != sectors * SECTOR:
                        raise FirmwareError(f"{where}: a raw chunk of {length:,} bytes for {sectors} sectors")
                else:
                    start = 0
                chunks.append(Chunk(first + sector, sectors, kind, start, length))
        chunks.sort(key=lambda c: c.sector)
        for a, b in zip(chunks, chunks[1:]):
            if a.sector + a.sectors > b.sector:
                raise FirmwareError(f"{name}: chunks overlap at disk offset {b.sector * SECTOR:,}")
        return partitions, chunks

    def _check_master(self, expected: int) -> None:
        """The trailer's master checksum: CRC32 of the blkx tables' own checksums (cheap: no data read)."""
        crc = zlib.crc32(b"".join(self._mish_checksums))
        if crc != expected:
            raise FirmwareError(f"{self.name}: UDIF master checksum mismatch (CRC32 {crc:08x}, trailer says "
                                f"{expected:08x}): the image's tables are corrupt")

    def _check_partitions(self) -> None:
        """Each blkx entry's CRC32 of its decoded chunks, ignored (free) chunks left out as hdiutil does
        (small images only: it decodes everything)."""
        for part in self.partitions:
            if part.crc32 is None:
                continue
            crc = 0
            for chunk in self.chunks:
                if part.sector <= chunk.sector < part.sector + part.sectors and chunk.kind != IGNORE:
                    crc = zlib.crc32(self._pread(chunk.sector * SECTOR, chunk.sectors * SECTOR), crc)
            if crc != part.crc32:
                raise FirmwareError(f"{self.name}: blkx entry {part.name!r} (disk offset {part.sector * SECTOR:,}): "
                                    f"checksum mismatch (CRC32 {crc:08x}, table says {part.crc32:08x}): corrupt")

    def _check_crc(self, expected: int) -> None:
        crc, pos, end = 0, self._data_offset, self._data_offset + self._data_length
        while pos < end:
            self._fh.seek(pos)
            block = self._fh.read(min(1 << 20, end - pos))
            crc = zlib.crc32(block, crc)
            pos += len(block)
        if crc != expected:
            raise FirmwareError(f"{self.name}: UDIF data fork checksum mismatch (CRC32 {crc:08x}, trailer says "
                                f"{expected:08x}): the image is corrupt")

    @property
    def chunk_kinds(self) -> set[str]:
        return {CHUNK_NAMES[c.kind] for c in self.chunks}

    def _decoded(self, index: int) -> bytes:
        data = self._cache.get(index)
        if data is not None:
            self._cache.move_to_end(index)
            return data
        chunk = self.chunks[index]
        where = f"{self.name}: {CHUNK_NAMES[chunk.kind]} chunk at disk offset {chunk.sector * SECTOR:,}"
        self._fh.seek(chunk.offset)
        raw = self._fh.read(chunk.length)
        expected = chunk.sectors * SECTOR
        data = _DECODERS[chunk.kind](raw, expected, where)
        if len(data) != expected:
            raise FirmwareError(f"{where}: decodes to {len(data):,} bytes, not its {expected:,}: corrupt")
        self._cache[index] = data
        self._cached_bytes += len(data)
        while self._cached_bytes > CACHE_BYTES and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped)
        return data

    def _pread(self, offset: int, size: int) -> bytes:
        parts, pos, end = [], offset, offset + size
        while pos < end:
            sector = pos // SECTOR
            index = bisect.bisect_right(self._starts, sector) - 1
            chunk = self.chunks[index] if index >= 0 else None
            if chunk is None or sector >= chunk.sector + chunk.sectors:
                # Not covered by any chunk (up to the next one): zeros, as hdiutil reads it.
                following = self._starts[index + 1] * SECTOR if index + 1 < len(self._starts) else self.size
                n = min(end, following) - pos
                parts.append(bytes(n))
                pos += n
                continue
            chunk_start = chunk.sector * SECTOR
            chunk_end = chunk_start + chunk.sectors * SECTOR
            n = min(end, chunk_end) - pos
            if chunk.kind in (ZERO_FILL, IGNORE):
                parts.append(bytes(n))
            elif chunk.kind == RAW:
                self._fh.seek(chunk.offset + pos - chunk_start)
                parts.append(self._fh.read(n))
            else:
                parts.append(self._decoded(index)[pos - chunk_start : pos - chunk_start + n])
            pos += n
        return b"".join(parts)
