"""The ``.espresso.weights`` file: a blob table and concatenated payloads.

Layout (see ESPRESSO.md)::

    u64 N                      little-endian, number of entries
    N x (u64 id, u64 length)   payload length in bytes
    payloads                   in entry order, no padding

The whole file is read into one buffer; blobs are numpy views into it, so no
value is ever touched by a Python loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import WeightsError

_ENTRY = np.dtype([("id", "<u8"), ("length", "<u8")])


@dataclass(frozen=True)
class BlobEntry:
    """One row of the blob table: where a payload lives in the file."""

    id: int
    offset: int
    length: int


class WeightsFile:
    """A parsed weights file: ``blob(id)`` gives the raw payload as a uint8 view."""

    def __init__(self, buffer: np.ndarray, entries: dict[int, BlobEntry], source: str):
        self._buffer = buffer
        self.entries = entries
        self.source = source

    @classmethod
    def from_bytes(cls, data: bytes | np.ndarray, *, source: str = "<bytes>") -> "WeightsFile":
        buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
        size = buf.size
        if size < 8:
            raise WeightsError(f"{source}: {size} bytes is too short for the blob count")
        count = int(buf[:8].view("<u8")[0])
        table_end = 8 + 16 * count
        if count > (size - 8) // 16:
            raise WeightsError(f"{source}: declares {count} blob entries, the file has room for {(size - 8) // 16}")
        table = buf[8:table_end].view(_ENTRY)
        ids = table["id"].astype(np.int64, copy=False) if count else np.zeros(0, np.int64)
        lengths = table["length"]
        if count and (table["id"] > np.iinfo(np.int64).max).any():
            raise WeightsError(f"{source}: a blob id does not fit in 63 bits")
        unique, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise WeightsError(f"{source}: blob id {int(unique[counts > 1][0])} is listed more than once")
        payload = size - table_end
        # Sum in Python ints: u64 lengths can overflow a numpy sum.
        declared = int(lengths.astype(object).sum()) if count else 0
        if declared != payload:
            raise WeightsError(
                f"{source}: the blob table declares {declared} payload bytes, the file holds {payload}"
            )
        # Python ints: no float or overflow surprises, and the table is at most a few hundred rows.
        entries = {}
        offset = table_end
        for blob_id, length in zip(ids.tolist(), lengths.tolist()):
            entries[blob_id] = BlobEntry(blob_id, offset, length)
            offset += length
        return cls(buf, entries, source)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "WeightsFile":
        path = Path(path)
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise WeightsError(f"{path}: cannot read weights file ({exc.strerror or exc})") from None
        return cls.from_bytes(data, source=str(path))

    @property
    def payload_bytes(self) -> int:
        return sum(e.length for e in self.entries.values())

    def __contains__(self, blob_id: int) -> bool:
        return blob_id in self.entries

    def blob(self, blob_id: int) -> np.ndarray:
        """The raw payload of ``blob_id`` as a read-only uint8 view."""
        entry = self.entries.get(blob_id)
        if entry is None:
            raise WeightsError(f"{self.source}: no blob with id {blob_id}")
        view = self._buffer[entry.offset : entry.offset + entry.length]
        view.flags.writeable = False
        return view


def encode_weights(blobs: Mapping[int, np.ndarray | bytes], *, empty_ids: tuple[int, ...] = ()) -> bytes:
    """Serialise blobs (id -> array or bytes) into the weights layout, ids ascending.

    ``empty_ids`` adds zero-length entries, as some compiled models list them.
    """
    payloads: dict[int, bytes] = {}
    for blob_id, value in blobs.items():
        if isinstance(value, np.ndarray):
            if value.dtype.byteorder == ">":
                value = value.astype(value.dtype.newbyteorder("<"))
            payloads[int(blob_id)] = np.ascontiguousarray(value).tobytes()
        else:
            payloads[int(blob_id)] = bytes(value)
    for blob_id in empty_ids:
        payloads.setdefault(int(blob_id), b"")
    order = sorted(payloads)
    table = np.zeros(len(order), dtype=_ENTRY)
    table["id"] = order
    table["length"] = [len(payloads[i]) for i in order]
    return np.uint64(len(order)).astype("<u8").tobytes() + table.tobytes() + b"".join(payloads[i] for i in order)
