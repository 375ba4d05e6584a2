"""Reading hash lists: ``HEX  PATH`` text, CSV and JSON Lines, streamed.

Everything ``neuralhash hash`` (text, ``--csv``, ``--jsonl``) and
``neuralhash index export`` write reads back exactly, by the rules of
:mod:`neuralhash.pathnames`: text lines as ``sha256sum`` writes them (a line
starting with ``\\`` has an escaped name), CSV with a ``hash`` column (and
``path``, optionally ``error``), JSONL records with ``hash`` and ``path`` /
``path_b64``. Lists from other tools are read leniently: any white space
between hash and name, ``#`` comments, upper-case hex, a bare hash without a
name (named ``LABEL:LINE``).

The file is read in chunks and split at ``\\n`` only, so memory stays bounded
whatever its size; a line (or CSV record) longer than :data:`MAX_LINE` bytes
is a malformed line, never a reason to read on without bound. Bytes that are
not UTF-8 are kept as surrogates (``surrogateescape``), as file names are.

:func:`iter_batches` yields :class:`Batch` es (names, packed digests, skipped
lines) for bulk work; :func:`iter_entries` one ``(line, entry or reason)`` at
a time.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from typing import IO, Iterator

import numpy as np

from .errors import NeuralHashError
from .pathnames import PathNameError, display, name_from_json, split_text_line

HEX_DIGITS = 24
MAX_LINE = 1 << 16  # bytes in one line or CSV record; a longer one is malformed
_CHUNK = 1 << 20
_BATCH = 1 << 16

# ASCII code -> nibble value, 255 for anything that is not a hex digit.
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i


class HashListError(NeuralHashError):
    """A hash list that cannot be read at all (as opposed to a malformed line, which is skipped)."""


@dataclass
class Batch:
    """Consecutive entries of a list: ``names[k]`` has the hash ``digests[12k:12k+12]``, from line ``lines[k]``."""

    lines: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    digests: bytearray = field(default_factory=bytearray)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    raw: list[bytes] | None = None  # the names' bytes, when at hand
    utf8: bool = False  # every name is valid UTF-8

    def __len__(self) -> int:
        return len(self.names)

    def add(self, lineno: int, entry: tuple[str, bytes] | str) -> None:
        if isinstance(entry, str):
            self.skipped.append((lineno, entry))
        else:
            self.lines.append(lineno)
            self.names.append(entry[0])
            self.digests += entry[1]


def parse_hex(text: str) -> bytes | None:
    """12 bytes from 24 hex digits (any case, surrounding blanks ignored), or None when ``text`` is not that."""
    text = text.strip()
    if len(text) != HEX_DIGITS or not text.isascii():
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def entry(hex_text, name, label: str, lineno: int) -> tuple[str, bytes] | str:
    """``(name, digest)`` of one record, or the reason it is malformed."""
    if not isinstance(hex_text, str) or not hex_text.strip():
        return "no hash"
    digest = parse_hex(hex_text)
    if digest is None:
        return f"not a 96-bit hash (24 hex digits): {display(hex_text.strip()[:40])!r}"
    if name is not None and not isinstance(name, str):
        return "the path is not a string"
    # A bare hash (no name) is named after its place in the list.
    return (name if name else f"{label}:{lineno}"), digest


# -- reading lines -----------------------------------------------------------------------


def _open(source) -> tuple[IO[bytes], bool]:
    """A binary stream of ``source`` (a path or a binary file object) and whether we opened it."""
    if hasattr(source, "read"):
        return source, False
    try:
        return open(source, "rb"), True
    except OSError as exc:
        raise HashListError(f"{display(os.fsdecode(source))}: cannot read hash list "
                            f"({exc.strerror or exc})") from None


def _read(stream: IO[bytes], where: str, size: int = _CHUNK) -> bytes:
    try:
        data = stream.read(size)
    except OSError as exc:
        raise HashListError(f"{where}: cannot read hash list ({exc.strerror or exc})") from None
    if not isinstance(data, (bytes, bytearray)):
        raise HashListError(f"{where}: a hash list is read as bytes (open the file in binary mode)")
    return bytes(data)


def _lines(stream: IO[bytes], head: bytes, where: str) -> Iterator[list[bytes | None]]:
    """Lists of lines (without ``\\n``) split at ``\\n`` only; ``None`` stands for a line over MAX_LINE."""
    tail = head
    skipping = False  # inside an over-long line: drop bytes up to its end
    while True:
        data = _read(stream, where)
        buf = tail + data
        parts = buf.split(b"\n")
        tail = parts.pop()
        out: list[bytes | None] = []
        for k, part in enumerate(parts):
            if skipping:
                skipping = False
                continue  # the end of a line already reported
            out.append(part if len(part) <= MAX_LINE else None)
        if len(tail) > MAX_LINE:
            if not skipping:
                out.append(None)
                skipping = True
            tail = b""
        if out:
            yield out
        if not data:
            if tail and not skipping:
                yield [tail if len(tail) <= MAX_LINE else None]
            return


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


_TOO_LONG = f"a line longer than {MAX_LINE} bytes"


# -- the three formats ---------------------------------------------------------------------


def _text_batches(lines: Iterator[list[bytes | None]], label: str) -> Iterator[Batch]:
    lineno = 0
    for chunk in lines:
        batch = Batch()
        k = len(chunk)
        first = lineno + 1
        lineno += k
        # The common line, "HEX  NAME" as sha256sum writes it, is parsed for the whole chunk at once.
        lens = np.fromiter((-1 if raw is None else len(raw) for raw in chunk), np.int64, k)
        buf = np.frombuffer(b"\n".join(raw or b"" for raw in chunk) + b"\n" * 27, np.uint8)
        starts = np.concatenate(([0], np.cumsum(np.maximum(lens, 0) + 1)[:-1]))
        fast = (lens > 26) & (buf[starts + 24] == 32) & (buf[starts + 25] == 32) & (buf[starts] != 92)
        fast &= buf[starts + 26] != 13
        cand = np.flatnonzero(fast)
        nib = _NIBBLE[buf[starts[cand, None] + np.arange(HEX_DIGITS)]]
        good = ~(nib == 255).any(axis=1)
        cand, nib = cand[good], nib[good]
        fast[:] = False
        fast[cand] = True
        if cand.size:
            batch.digests = bytearray(((nib[:, 0::2] << 4) | nib[:, 1::2]).tobytes())
            raws = [chunk[j][26:] for j in cand.tolist()]
            raws = [r[:-1] if r[-1:] == b"\r" else r for r in raws]
            batch.raw = raws
            joined = b"\n".join(raws)
            try:
                batch.names = joined.decode("utf-8").split("\n")
                batch.utf8 = True
            except UnicodeDecodeError:
                batch.names = [_decode(r) for r in raws]
            batch.lines = (cand + first).tolist()
        slow = np.flatnonzero(~fast)
        for j in slow.tolist():
            raw, ln = chunk[j], first + j
            if raw is None:
                batch.skipped.append((ln, _TOO_LONG))
                continue
            text = _decode(raw)
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            try:
                hex_text, name = split_text_line(text)
            except PathNameError as exc:
                batch.skipped.append((ln, str(exc)))
                continue
            got = entry(hex_text, name, label, ln)
            if isinstance(got, str):
                batch.skipped.append((ln, got))
            else:
                batch.lines.append(ln)
                batch.names.append(got[0])
                batch.digests += got[1]
                batch.raw = None
                batch.utf8 = False
        if slow.size and cand.size:
            _restore_order(batch)
        yield batch


def _restore_order(batch: Batch) -> None:
    """Entries in line order (the slow lines were parsed after the fast ones)."""
    if all(a < b for a, b in zip(batch.lines, batch.lines[1:])):
        return
    order = sorted(range(len(batch.lines)), key=batch.lines.__getitem__)
    batch.raw = None
    digests = np.frombuffer(bytes(batch.digests), np.uint8).reshape(-1, 12)[order]
    batch.lines = [batch.lines[k] for k in order]
    batch.names = [batch.names[k] for k in order]
    batch.digests = bytearray(digests.tobytes())
    batch.skipped.sort()


def _jsonl_batches(lines: Iterator[list[bytes | None]], label: str) -> Iterator[Batch]:
    lineno = 0
    for chunk in lines:
        batch = Batch()
        for raw in chunk:
            lineno += 1
            if raw is None:
                batch.skipped.append((lineno, _TOO_LONG))
                continue
            text = _decode(raw)
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except ValueError as exc:
                batch.skipped.append((lineno, f"not a JSON object ({getattr(exc, 'msg', exc)})"))
                continue
            except RecursionError:
                batch.skipped.append((lineno, "not a JSON object (nested too deeply)"))
                continue
            if not isinstance(obj, dict):
                batch.skipped.append((lineno, "not a JSON object"))
                continue
            if obj.get("error"):
                batch.skipped.append((lineno, f"an error record, not a hash ({display(str(obj.get('error')))})"))
                continue
            try:
                name = name_from_json(obj)
            except PathNameError as exc:
                batch.skipped.append((lineno, str(exc)))
                continue
            batch.add(lineno, entry(obj.get("hash"), name, label, lineno))
        yield batch


class _LimitedLines:
    """Text lines for :mod:`csv` from the ``\\n``-split byte lines (``\\n`` put back: quoted fields span lines)."""

    def __init__(self, lines: Iterator[list[bytes | None]]):
        self._chunks = lines
        self._buf: list[bytes | None] = []
        self._pos = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        while self._pos >= len(self._buf):
            self._buf = next(self._chunks)
            self._pos = 0
        raw = self._buf[self._pos]
        self._pos += 1
        if raw is None:
            raise HashListError(_TOO_LONG)
        return _decode(raw) + "\n"


def _csv_batches(lines: Iterator[list[bytes | None]], label: str, where: str) -> Iterator[Batch]:
    reader = csv.reader(_LimitedLines(lines), strict=False)
    columns: dict[str, int] | None = None
    batch = Batch()
    old_limit = csv.field_size_limit(MAX_LINE)
    try:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except HashListError as exc:
                raise HashListError(f"{where}:{reader.line_num + 1}: {exc}") from None
            except csv.Error as exc:
                # The csv module cannot resynchronise after this (an unclosed quote swallows the rest).
                raise HashListError(f"{where}:{reader.line_num}: unreadable CSV ({exc})") from None
            lineno = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                columns = {h.strip().lower(): i for i, h in enumerate(row)}
                continue

            def get(key: str):
                i = columns.get(key)
                return row[i] if i is not None and i < len(row) else None

            if get("error"):
                batch.skipped.append((lineno, f"an error record, not a hash ({display(get('error'))})"))
            else:
                batch.add(lineno, entry(get("hash"), get("path") or None, label, lineno))
            if len(batch.names) + len(batch.skipped) >= _BATCH:
                yield batch
                batch = Batch()
    finally:
        csv.field_size_limit(old_limit)
    yield batch


def _csv_header(line: str) -> list[str]:
    try:
        return [h.strip().lower() for h in next(csv.reader([line.rstrip("\r")]), [])]
    except csv.Error:
        return []


def iter_batches(source, *, label: str | None = None, where: str | None = None) -> Iterator[Batch]:
    """The entries of a hash list (a path or a binary file object), a batch at a time.

    ``label`` names bare hashes (``LABEL:LINE``; default the file's name) and
    ``where`` the file in errors. Malformed lines are in each batch's
    ``skipped``; a list that cannot be read at all raises :class:`HashListError`.
    """
    stream, opened = _open(source)
    if opened:
        name = os.fsdecode(source)
    else:
        given = getattr(source, "name", None)
        name = os.fsdecode(given) if isinstance(given, (str, bytes)) else "-"
    where = where or display(name)
    label = label or os.path.basename(name) or "-"
    try:
        head = _read(stream, where)
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:]
        # The format is told by the first non-blank line (read on until one is complete).
        while True:
            first = next((ln for ln in head.split(b"\n") if ln.strip()), None)
            complete = first is not None and (b"\n" in head[head.find(first):] or len(first) > MAX_LINE)
            if complete or len(head) > MAX_LINE:
                break
            more = _read(stream, where)
            if not more:
                break
            head += more
        first_text = _decode(first or b"").lstrip()
        lines = _lines(stream, head, where)
        if first_text.startswith("{"):
            yield from _jsonl_batches(lines, label)
        elif "," in first_text and "hash" in _csv_header(first_text):
            yield from _csv_batches(lines, label, where)
        else:
            yield from _text_batches(lines, label)
    finally:
        if opened:
            stream.close()


def iter_entries(source, *, label: str | None = None, where: str | None = None
                 ) -> Iterator[tuple[int, tuple[str, bytes] | str]]:
    """``(line number, (name, 12 digest bytes))`` or ``(line number, reason)`` per entry, in line order."""
    for batch in iter_batches(source, label=label, where=where):
        items: list[tuple[int, tuple[str, bytes] | str]] = list(batch.skipped)
        items += [(ln, (nm, bytes(batch.digests[12 * k:12 * k + 12])))
                  for k, (ln, nm) in enumerate(zip(batch.lines, batch.names))]
        items.sort(key=lambda item: item[0])
        yield from items


def parse_text(text: str, label: str = "-") -> list[tuple[int, tuple[str, bytes] | str]]:
    """:func:`iter_entries` of a list held in a string (tests, small inputs)."""
    raw = text.encode("utf-8", "surrogateescape")
    return list(iter_entries(io.BytesIO(raw), label=label, where=label))
