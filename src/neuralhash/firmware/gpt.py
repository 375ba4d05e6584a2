"""GUID partition tables: the APFS partition of a disk (512- or 4096-byte sectors)."""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

from ..errors import FirmwareError
from .rangefile import RangeFile, ReadOnlyFile

APFS_TYPE = uuid.UUID("7C3457EF-0000-11AA-AA11-00306543ECAC")
HFS_TYPE = uuid.UUID("48465300-0000-11AA-AA11-00306543ECAC")
MAX_ENTRIES = 1024


@dataclass(frozen=True)
class GptPartition:
    index: int
    type: uuid.UUID
    name: str
    start: int  # bytes
    length: int


def gpt_sector_size(fh: ReadOnlyFile) -> int | None:
    """512 or 4096 when the disk starts with a GPT header at LBA 1, else None."""
    for sector in (512, 4096):
        if fh.size >= 2 * sector:
            fh.seek(sector)
            if fh.read(8) == b"EFI PART":
                return sector
    return None


def partitions(fh: ReadOnlyFile, sector: int) -> list[GptPartition]:
    name = fh.name
    fh.seek(sector)
    header = fh.read(92)
    header_size, header_crc = struct.unpack_from("<II", header, 12)
    if header_size == 92:
        check = header[:16] + b"\0\0\0\0" + header[20:92]
        if zlib.crc32(check) != header_crc:
            raise FirmwareError(f"{name}: GPT header checksum mismatch: the disk image is corrupt")
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", header, 72)
    if count > MAX_ENTRIES or not 128 <= entry_size <= 4096:
        raise FirmwareError(f"{name}: GPT header declares {count:,} entries of {entry_size} bytes: corrupt")
    fh.seek(entries_lba * sector)
    table = fh.read(count * entry_size)
    if zlib.crc32(table) != entries_crc:
        raise FirmwareError(f"{name}: GPT partition table checksum mismatch: the disk image is corrupt")
    found = []
    for i in range(count):
        entry = table[i * entry_size : (i + 1) * entry_size]
        kind = uuid.UUID(bytes_le=entry[:16])
        if kind.int == 0:
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        label = entry[56:128].decode("utf-16-le", "replace").rstrip("\0")
        found.append(GptPartition(i, kind, label, first * sector, (last - first + 1) * sector))
    return found


def apfs_partitions(fh: ReadOnlyFile, sector: int) -> tuple[list[RangeFile], list[GptPartition]]:
    """(the APFS partitions as files, every partition)."""
    parts = partitions(fh, sector)
    files = [RangeFile(fh, p.start, p.length, f"{fh.name} partition {p.index + 1}")
             for p in parts if p.type == APFS_TYPE]
    return files, parts
