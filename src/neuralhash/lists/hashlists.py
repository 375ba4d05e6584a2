"""Hash lists in the formats people exchange, streamed: read (:func:`iter_batches`) and written (:class:`ListWriter`).

Formats (``FORMATS``; the names ``index import/export --format`` take):

- ``text``: ``HEX  PATH`` lines as ``neuralhash hash`` and ``sha256sum`` write
  them (a line starting with ``\\`` has an escaped name). Read leniently: any
  white space between hash and name, ``#`` comments, upper-case hex, a bare
  hash without a name (named ``LABEL:LINE``).
- ``csv``: a header row with a ``hash`` column, and ``path`` (optionally
  ``error``: such a record is a failure, not a hash).
- ``jsonl``: one object per line with ``hash`` and ``path`` / ``path_b64``.
- ``tx-file``: the signal file of threatexchange's local-file collaboration
  (``threatexchange config collab edit local_file --filename F``): lines
  ``SIGNAL_TYPE SIGNAL`` (``neuralhash 59a34eab...``), or a bare signal. It is
  also what ``threatexchange dataset -P -S`` prints. Signals of other types
  are reported as skipped lines.
- ``tx-dataset``: ``threatexchange dataset -P``'s lines,
  ``[TYPE ]SIGNAL[ 'COLLAB'] CATEGORY[ TAG,TAG...]`` (the type is left out
  with ``-s TYPE``, the collaboration, a Python string literal, with ``-c NAME``).
- ``tx-dataset-csv``: ``threatexchange dataset -P --csv``: CSV (``\\r\\n``) with
  ``signal_type,signal_str,collab,category,tags`` (tags separated by spaces).

**Extra fields.** What an entry carries beside its name and hash is kept as a
JSON object (``Batch.extras``: its text, or None), stored per entry and
written back by export:

- csv: every column but the reserved ones (:data:`RESERVED`), by header, as
  strings (an empty cell is ``""``); written back as columns after
  ``path,hash,model,list`` (a value that is not a string as its JSON text).
- jsonl: every key but the reserved ones, as JSON values; written back as keys.
- tx-dataset and tx-dataset-csv: ``collab``, ``category`` and ``tags`` (a
  list); metadata that is not ``CATEGORY[ TAGS]`` (threatexchange APIs that
  print their own, such as StopNCII's) is kept whole as ``metadata``.
- text and tx-file have no place for names or extras: export drops them and
  says how many (:attr:`ListWriter.dropped_names`, ``dropped_extras``).

The reserved fields (``hash``, ``path``, ``path_b64``, ``error``, and ``model``
and ``list``, which ``index export`` writes to say where an entry came from)
are never extras.

**Detection** (no ``--format``) looks at the first non-blank line: ``{`` is
jsonl; a CSV header with ``hash`` is csv, with ``signal_type`` and
``signal_str`` tx-dataset-csv; a first word that is not a 24-digit hash (a
signal type) followed by one run of hex digits (``neuralhash 59a3...``,
``pdq ...``) is tx-file, or tx-dataset when a quoted collaboration or an opinion
category (``INVESTIGATION_SEED``...) follows the signal; a hash followed by ONE
space and then a category or a quoted collaboration (``dataset -P -s
neuralhash``) is tx-dataset; anything else is text (whose writer always puts
two spaces after the hash). Pass the format to override.

The file is read in chunks and split at ``\\n`` only, so memory stays bounded
whatever its size; a line (or CSV record) longer than :data:`MAX_LINE` bytes
is a malformed line, never a reason to read on without bound. Bytes that are
not UTF-8 are kept as surrogates (``surrogateescape``), as file names are.
Names follow :mod:`neuralhash.files.pathnames`.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator, Mapping

import numpy as np

from ..errors import NeuralHashError
from ..files.pathnames import PathNameError, csv_row, display, is_utf8, json_fields, name_from_json, split_text_line, text_line

HEX_DIGITS = 24
MAX_LINE = 1 << 16  # bytes in one line or CSV record; a longer one is malformed
_CHUNK = 1 << 20
_BATCH = 1 << 16

FORMATS = ("text", "csv", "jsonl", "tx-file", "tx-dataset", "tx-dataset-csv")
#: Fields that are never extras: the entry's own (hash, name, error) and what export adds (model, list).
RESERVED = frozenset({"hash", "path", "path_b64", "error", "model", "list"})
#: threatexchange's signal type name for NeuralHash (neuralhash.integrations.threatexchange).
TX_SIGNAL_TYPE = "neuralhash"
#: threatexchange's opinion categories (AggregateSignalOpinionCategory), as ``dataset -P`` prints them.
TX_CATEGORIES = ("NEGATIVE_CLASS", "INVESTIGATION_SEED", "POSITIVE_CLASS", "DISPUTED")
#: The category threatexchange gives a signal nobody has an opinion on (SignalOpinion.get_trivial).
TX_DEFAULT_CATEGORY = "INVESTIGATION_SEED"
TX_CSV_COLUMNS = ("signal_type", "signal_str", "collab", "category", "tags")
MAX_EXTRA_COLUMNS = 4096  # distinct extra fields a CSV export makes columns of

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
    extras: list[str | None] | None = None  # per entry its extra fields as JSON text (None: none at all)

    def __len__(self) -> int:
        return len(self.names)

    def add(self, lineno: int, entry: tuple[str, bytes] | str, extra: Mapping[str, Any] | None = None) -> None:
        if isinstance(entry, str):
            self.skipped.append((lineno, entry))
            return
        text = extra_json(extra)
        if text is not None and self.extras is None:
            self.extras = [None] * len(self.names)
        self.lines.append(lineno)
        self.names.append(entry[0])
        self.digests += entry[1]
        if self.extras is not None:
            self.extras.append(text)


def extra_json(extra: Mapping[str, Any] | None) -> str | None:
    """The stored text of an entry's extra fields (None for none): compact JSON, UTF-8 when the
    values are (undecodable bytes from a CSV cell are kept as ``\\udcXX`` escapes)."""
    if not extra:
        return None
    text = json.dumps(extra, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text if is_utf8(text) else json.dumps(extra, separators=(",", ":"), allow_nan=False)


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
    if batch.extras is not None:
        batch.extras = [batch.extras[k] for k in order]
    batch.lines = [batch.lines[k] for k in order]
    batch.names = [batch.names[k] for k in order]
    batch.digests = bytearray(digests.tobytes())
    batch.skipped.sort()


def _line_batches(lines: Iterator[list[bytes | None]], read: Callable[[Batch, int, str], None]) -> Iterator[Batch]:
    """A batch per chunk of byte lines: ``read(batch, line number, text)`` for each non-blank line;
    an over-long line is skipped as malformed. (The JSONL and threatexchange readers.)"""
    lineno = 0
    for chunk in lines:
        batch = Batch()
        for raw in chunk:
            lineno += 1
            if raw is None:
                batch.skipped.append((lineno, _TOO_LONG))
                continue
            text = _decode(raw)
            if text.strip():
                read(batch, lineno, text)
        yield batch


def _jsonl_batches(lines: Iterator[list[bytes | None]], label: str) -> Iterator[Batch]:
    def read(batch: Batch, lineno: int, text: str) -> None:
        try:
            obj = json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            batch.skipped.append((lineno, f"not a JSON object ({getattr(exc, 'msg', exc)})"))
            return
        except RecursionError:
            batch.skipped.append((lineno, "not a JSON object (nested too deeply)"))
            return
        if not isinstance(obj, dict):
            batch.skipped.append((lineno, "not a JSON object"))
            return
        if obj.get("error"):
            batch.skipped.append((lineno, f"an error record, not a hash ({display(str(obj.get('error')))})"))
            return
        try:
            name = name_from_json(obj)
        except PathNameError as exc:
            batch.skipped.append((lineno, str(exc)))
            return
        batch.add(lineno, entry(obj.get("hash"), name, label, lineno),
                  {k: v for k, v in obj.items() if k not in RESERVED})

    return _line_batches(lines, read)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


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


def _csv_batches(lines: Iterator[list[bytes | None]], label: str, where: str, tx: bool = False) -> Iterator[Batch]:
    """CSV with a ``hash`` column, or (``tx``) threatexchange's dataset CSV with ``signal_str``."""
    reader = csv.reader(_LimitedLines(lines), strict=False)
    columns: dict[str, int] | None = None
    extra_cols: list[tuple[str, int]] = []
    batch = Batch()
    held = 0  # characters of names and extras in the batch: a batch of long records is cut short
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
                columns, extra_cols = _csv_columns(row, tx, f"{where}:{lineno}")
                continue

            def get(key: str):
                i = columns.get(key)
                return row[i] if i is not None and i < len(row) else None

            extra = {h: row[i] for h, i in extra_cols if i < len(row)}
            if get("error"):
                batch.skipped.append((lineno, f"an error record, not a hash ({display(get('error'))})"))
            elif tx:
                kind = get("signal_type")
                if kind != TX_SIGNAL_TYPE:
                    batch.skipped.append((lineno, f"a {display(kind or '(no type)')!r} signal, not {TX_SIGNAL_TYPE}"))
                else:
                    tags = extra.get("tags")
                    if tags is not None:
                        extra["tags"] = tags.split(" ") if tags else []
                    batch.add(lineno, entry(get("signal_str"), None, label, lineno), extra)
            else:
                try:
                    name = name_from_json({"path": get("path"), "path_b64": get("path_b64") or None}) or None
                except PathNameError as exc:
                    batch.skipped.append((lineno, str(exc)))
                else:
                    batch.add(lineno, entry(get("hash"), name, label, lineno), extra)
            held += sum(map(len, row))
            if len(batch.names) + len(batch.skipped) >= _BATCH or held >= 32 * _CHUNK:
                yield batch
                batch = Batch()
                held = 0
    finally:
        csv.field_size_limit(old_limit)
    yield batch


def _csv_columns(header: list[str], tx: bool, where: str) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """(reserved column -> index, [(extra column's header, index)]) of a header row."""
    reserved = {"signal_type", "signal_str"} if tx else RESERVED
    columns: dict[str, int] = {}
    extra: list[tuple[str, int]] = []
    seen: set[str] = set()
    for i, h in enumerate(header):
        key = h.strip().lower()
        if key in reserved:
            columns[key] = i
            continue
        if h in seen:
            # Two columns of one name would come back as one: refuse rather than lose one.
            raise HashListError(f"{where}: the column {display(h)!r} appears twice")
        seen.add(h)
        extra.append((h, i))
    return columns, extra


def _csv_header(line: str) -> list[str]:
    try:
        return [h.strip().lower() for h in next(csv.reader([line.rstrip("\r")]), [])]
    except csv.Error:
        return []


# -- threatexchange's formats --------------------------------------------------------------

_HEX24 = re.compile(r"[0-9a-fA-F]{24}")
_CATEGORY = "|".join(TX_CATEGORIES)
# What follows the signal in `threatexchange dataset -P`: an optional collaboration (repr of a str), a category.
_TX_TAIL = re.compile(rf"(?:'|\"|(?:{_CATEGORY})(?: |$))")


def _tx_lines(lines: Iterator[list[bytes | None]], parse) -> Iterator[Batch]:
    def read(batch: Batch, lineno: int, text: str) -> None:
        got = parse(text.strip())  # stripped, as threatexchange reads them
        if isinstance(got, str):
            batch.skipped.append((lineno, got))
        else:
            hex_text, extra = got
            batch.add(lineno, entry(hex_text, None, "", lineno), extra)

    return _line_batches(lines, read)


def _tx_file_line(text: str) -> tuple[str, None] | str:
    """``TYPE SIGNAL`` (LocalFileSignalExchangeAPI's rule: split at the first space) or a bare signal."""
    kind, _, signal = text.partition(" ")
    if not signal:
        return kind, None  # a bare signal: the collaboration's signal_type says what it is
    if kind != TX_SIGNAL_TYPE:
        return f"a {display(kind)!r} signal, not {TX_SIGNAL_TYPE}"
    return signal, None


def _python_str(text: str) -> tuple[str, str] | None:
    """(the value of the Python string literal ``text`` starts with, the rest), or None."""
    quote = text[0]
    i = 1
    while i < len(text) and text[i] != quote:
        i += 2 if text[i] == "\\" else 1
    if i >= len(text):
        return None
    try:
        value = ast.literal_eval(text[:i + 1])
    except (ValueError, SyntaxError):
        return None
    return (value, text[i + 1:]) if isinstance(value, str) else None


def _tx_dataset_line(text: str) -> tuple[str, dict] | str:
    """``[TYPE ]SIGNAL[ 'COLLAB'] METADATA`` as ``threatexchange dataset -P`` prints it."""
    first, _, rest = text.partition(" ")
    if _HEX24.fullmatch(first):
        signal = first  # printed with -s TYPE: no type
    else:
        if first != TX_SIGNAL_TYPE:
            return f"a {display(first)!r} signal, not {TX_SIGNAL_TYPE}"
        signal, _, rest = rest.partition(" ")
    extra: dict[str, Any] = {}
    if rest[:1] in ("'", '"'):
        got = _python_str(rest)
        if got is None:
            return "the collaboration's name is not a quoted string"
        extra["collab"], rest = got
        if rest[:1] != " ":
            return "no opinion after the collaboration's name"
        rest = rest[1:]
    category, _, tags = rest.partition(" ")
    if category in TX_CATEGORIES:
        extra["category"] = category
        extra["tags"] = tags.split(",") if tags else []
    elif rest:
        extra["metadata"] = rest  # an API's own summary (StopNCII, NCMEC): kept whole
    else:
        return "no opinion after the signal"
    return signal, extra


def detect_format(first_line: str) -> str:
    """The format a list whose first non-blank line is ``first_line`` is read as (see the module doc)."""
    line = first_line.strip()
    if line.startswith("{"):
        return "jsonl"
    if "," in line:
        header = _csv_header(line)
        if "hash" in header:
            return "csv"
        if "signal_type" in header and "signal_str" in header:
            return "tx-dataset-csv"
    first, sep, rest = line.partition(" ")
    if _HEX24.fullmatch(first):
        # `dataset -P -s neuralhash`: one space, then a collaboration or a category (text has two spaces).
        return "tx-dataset" if sep and _TX_TAIL.match(rest) else "text"
    signal, _, tail = rest.partition(" ")
    # A signal type's name, then a hash-like signal (neuralhash, pdq, md5...).
    if re.fullmatch(r"[a-z][a-z0-9_]*", first) and re.fullmatch(r"[0-9a-fA-F]+", signal):
        if not tail:
            return "tx-file"
        if _TX_TAIL.match(tail):
            return "tx-dataset"
    return "text"


def iter_batches(source, *, label: str | None = None, where: str | None = None,
                 format: str | None = None) -> Iterator[Batch]:
    """The entries of a hash list (a path or a binary file object), a batch at a time.

    ``label`` names bare hashes (``LABEL:LINE``; default the file's name) and
    ``where`` the file in errors. ``format`` (one of :data:`FORMATS`) skips
    detection. Malformed lines are in each batch's ``skipped``; a list that
    cannot be read at all raises :class:`HashListError`.
    """
    if format is not None and format not in FORMATS:
        raise HashListError(f"unknown hash-list format {format!r} (formats: {', '.join(FORMATS)})")
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
        while format is None:
            first = next((ln for ln in head.split(b"\n") if ln.strip()), None)
            complete = first is not None and (b"\n" in head[head.find(first):] or len(first) > MAX_LINE)
            if complete or len(head) > MAX_LINE:
                format = detect_format(_decode(first or b"")[:MAX_LINE])
                break
            more = _read(stream, where)
            if not more:
                format = detect_format(_decode(first or b""))
                break
            head += more
        lines = _lines(stream, head, where)
        if format == "jsonl":
            yield from _jsonl_batches(lines, label)
        elif format in ("csv", "tx-dataset-csv"):
            yield from _csv_batches(lines, label, where, tx=format == "tx-dataset-csv")
        elif format == "tx-file":
            yield from _named(_tx_lines(lines, _tx_file_line), label)
        elif format == "tx-dataset":
            yield from _named(_tx_lines(lines, _tx_dataset_line), label)
        else:
            yield from _text_batches(lines, label)
    finally:
        if opened:
            stream.close()


def _named(batches: Iterator[Batch], label: str) -> Iterator[Batch]:
    """threatexchange's lists name no entry: each is ``LABEL:LINE``, as a bare hash is."""
    for batch in batches:
        batch.names = [f"{label}:{ln}" for ln in batch.lines]
        yield batch


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


# -- writing ------------------------------------------------------------------------------

_TX_FIELDS = ("collab", "category", "tags", "metadata")  # the extras tx-dataset writes in its own places


class ListWriter:
    """Entries out in one of :data:`FORMATS`, as text a stream with ``surrogateescape`` writes
    (names' undecodable bytes go out as they are, :mod:`neuralhash.files.pathnames`' rules).

    ``extra_columns``: for csv and tx-dataset-csv, the extra fields that get a
    column (every one a row may hold: a field without a column is an error,
    never dropped silently). text and tx-file drop extras, and the tx formats
    names; ``dropped_names`` / ``dropped_extras`` count the entries that lost them.
    """

    def __init__(self, fmt: str, extra_columns: list[str] | tuple[str, ...] = ()):
        if fmt not in FORMATS:
            raise HashListError(f"unknown hash-list format {fmt!r} (formats: {', '.join(FORMATS)})")
        self.fmt = fmt
        self.extra_columns = [c for c in extra_columns if not (fmt == "tx-dataset-csv" and c in _TX_FIELDS[:3])]
        self.dropped_names = 0
        self.dropped_extras = 0

    def header(self) -> str:
        if self.fmt == "csv":
            return csv_row(["path", "hash", "model", "list", *self.extra_columns])
        if self.fmt == "tx-dataset-csv":
            return _crlf(csv_row([*TX_CSV_COLUMNS, *self.extra_columns]))
        return ""

    def row(self, name: str, hex_text: str, model: str, list_name: str,
            extra: Mapping[str, Any] | None = None) -> str:
        extra = extra or {}
        fmt = self.fmt
        if fmt == "text":
            self.dropped_extras += bool(extra)
            return text_line(hex_text, name)
        if fmt == "jsonl":
            obj = {**json_fields(name), "hash": hex_text, "model": model, "list": list_name}
            obj.update((k, v) for k, v in extra.items() if k not in RESERVED)
            text = json.dumps(obj, ensure_ascii=False)
            # A value holding undecodable bytes (from a CSV cell) as \udcXX escapes: the line stays UTF-8.
            return (text if is_utf8(text) else json.dumps(obj)) + "\n"
        if fmt == "csv":
            return csv_row([name, hex_text, model, list_name, *self._cells(extra, ())])
        self.dropped_names += 1
        if fmt == "tx-file":
            self.dropped_extras += bool(extra)
            return f"{TX_SIGNAL_TYPE} {hex_text}\n"
        collab = extra.get("collab", list_name)
        collab = collab if isinstance(collab, str) else json.dumps(collab)
        category = extra.get("category", TX_DEFAULT_CATEGORY if "metadata" not in extra else "")
        tags = extra.get("tags") or []
        tags = [tags] if isinstance(tags, str) else tags  # from a list of another tool: as it is
        tags = " ".join(map(str, tags)) if fmt == "tx-dataset-csv" else ",".join(map(str, tags))
        if fmt == "tx-dataset-csv":
            return _crlf(csv_row([TX_SIGNAL_TYPE, hex_text, collab, _cell(category), tags,
                                  *self._cells(extra, _TX_FIELDS[:3])]))
        self.dropped_extras += any(k not in _TX_FIELDS for k in extra)
        metadata = extra["metadata"] if "metadata" in extra else (f"{category} {tags}" if tags else category)
        # What `threatexchange dataset -P` prints: type, signal, repr of the collaboration, the opinion.
        return f"{TX_SIGNAL_TYPE} {hex_text} {collab!r} {_cell(metadata)}\n"

    def _cells(self, extra: Mapping[str, Any], own: tuple[str, ...]) -> list[str]:
        unknown = [k for k in extra if k not in RESERVED and k not in own and k not in self.extra_columns]
        if unknown:
            raise HashListError(f"an entry has the extra field {display(str(unknown[0]))!r}, which has no column")
        return [_cell(extra.get(c)) for c in self.extra_columns]


def _cell(value: Any) -> str:
    """A CSV cell: a string as it is, nothing as empty, anything else as its JSON text."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _crlf(row: str) -> str:
    # csv_row quotes exactly as Python's csv writer (QUOTE_MINIMAL) does; threatexchange's rows end in \r\n.
    return row[:-1] + "\r\n"
