"""File names as bytes, kept lossless through every format the project writes and reads.

On POSIX a file name is a byte string. Inside the project a name is a ``str``
made by :func:`os.fsdecode` (undecodable bytes become lone surrogates,
``surrogateescape``), so ``os.fsencode(name)`` gives the original bytes back.
Each format carries that ``str`` by one documented rule:

- **Text** (``HEX  PATH``, as ``sha256sum`` prints): the name's bytes follow two
  spaces verbatim. A name holding a backslash, a newline or a carriage return
  is escaped as GNU ``sha256sum`` does: the line starts with ``\\`` and the
  name has ``\\\\``, ``\\n`` and ``\\r`` in place of those bytes. Lines end at
  ``\\n`` only (one ``\\r`` before it is dropped, for files written on Windows).
- **JSON Lines**: ``"path"`` holds the name when it is valid UTF-8. When it is
  not, ``"path"`` holds a readable form (undecodable bytes as U+FFFD) and
  ``"path_b64"`` the name's exact bytes in standard base64; a reader uses
  ``path_b64`` when present. Records are read line by ``\\n`` only (JSON strings
  may hold U+2028, U+0085 and other characters ``str.splitlines`` splits on).
- **CSV**: :func:`csv_row` quotes a field holding a comma, a double quote, a
  newline or a carriage return (RFC 4180; Python's ``csv`` writer with a ``\n``
  terminator would leave a lone ``\r`` unquoted, which splits the record when
  read back); records end with ``\n``; the file's bytes are UTF-8 with the name's undecodable bytes written
  as they are, and read back with ``surrogateescape``.
- **SQLite**: a name that is valid UTF-8 is stored as TEXT, any other as a BLOB
  of its bytes.
- **Messages** (standard error): :func:`display` shows control characters
  escaped, so a failure stays one line.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any, Mapping

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}


class PathNameError(ValueError):
    """An encoded file name that does not follow the documented rule."""


def is_utf8(name: str) -> bool:
    """True when ``name`` holds no undecodable bytes (no lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def to_bytes(name: str) -> bytes:
    """The file name's original bytes."""
    return os.fsencode(name)


def from_bytes(raw: bytes) -> str:
    """A file name's bytes as the project's ``str`` (undecodable bytes kept as surrogates)."""
    return os.fsdecode(raw)


# -- text: HEX  PATH ----------------------------------------------------------------------


def text_line(hex_text: str, name: str) -> str:
    """One ``HEX  PATH`` line (with its ``\\n``), escaped like ``sha256sum`` when the name needs it."""
    if any(ch in name for ch in _ESCAPES):
        escaped = "".join(_ESCAPES.get(ch, ch) for ch in name)
        return f"\\{hex_text}  {escaped}\n"
    return f"{hex_text}  {name}\n"


def unescape_text_name(escaped: str) -> str:
    """The inverse of the escaping in :func:`text_line` (for a line that began with ``\\``)."""
    if "\\" not in escaped:
        return escaped
    out = []
    chars = iter(escaped)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars, None)
        if nxt not in _UNESCAPES:
            shown = "\\" if nxt is None else f"\\{nxt}"
            raise PathNameError(f"unknown escape {shown!r} in an escaped file name")
        out.append(_UNESCAPES[nxt])
    return "".join(out)


def split_text_line(line: str) -> tuple[str, str | None]:
    """``(hash text, name or None)`` of one text line (without its ``\\n``).

    The name follows the hash after two spaces (``sha256sum``'s text mode) or
    `` *`` (its binary mode) and is taken verbatim, spaces included. Lists from
    other tools that separate with other white space are read leniently (then a
    name cannot begin with white space). A line starting with ``\\`` has an
    escaped name.
    """
    if line.endswith("\r"):
        line = line[:-1]
    escaped = line.startswith("\\")
    if escaped:
        line = line[1:]
    head = line.lstrip(" \t")
    end = 0
    while end < len(head) and not head[end].isspace():
        end += 1
    hex_text, rest = head[:end], head[end:]
    if not rest:
        name = None
    elif rest.startswith("  ") or rest.startswith(" *"):
        name = rest[2:]
    else:
        name = rest.lstrip(" \t")
    if name is not None and escaped:
        name = unescape_text_name(name)
    return hex_text, (name if name else None)


# -- JSON Lines -------------------------------------------------------------------------


def json_fields(name: str, key: str = "path") -> dict[str, str]:
    """The JSON fields that carry ``name``: ``{key: ...}`` plus ``key + "_b64"`` when it is not UTF-8."""
    if is_utf8(name):
        return {key: name}
    raw = to_bytes(name)
    return {key: raw.decode("utf-8", "replace"), f"{key}_b64": base64.b64encode(raw).decode("ascii")}


def name_from_json(obj: Mapping[str, Any], key: str = "path") -> str | None:
    """The file name a JSON record carries (``path_b64`` wins over ``path``); None when it has none.

    Raises :class:`PathNameError` for a ``path_b64`` that is not base64 or a
    ``path`` that is not a string.
    """
    b64 = obj.get(f"{key}_b64")
    if b64 is not None:
        if not isinstance(b64, str):
            raise PathNameError(f"{key}_b64 should be a base64 string")
        try:
            return from_bytes(base64.b64decode(b64.encode("ascii"), validate=True))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise PathNameError(f"{key}_b64 is not valid base64") from None
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PathNameError(f"{key} should be a string")
    return value


# -- CSV --------------------------------------------------------------------------------

_CSV_SPECIAL = frozenset(',"\r\n')


def csv_field(value: object) -> str:
    text = "" if value is None else str(value)
    if _CSV_SPECIAL.isdisjoint(text):
        return text
    return '"' + text.replace('"', '""') + '"'


def csv_row(fields) -> str:
    """One CSV record (with its ``\\n``); read it back with :mod:`csv` (``newline=""``)."""
    fields = list(fields)
    if len(fields) == 1 and (fields[0] is None or fields[0] == ""):
        return '""\n'  # a lone empty field, not a blank line
    return ",".join(csv_field(f) for f in fields) + "\n"


# -- SQLite -----------------------------------------------------------------------------


def sql_value(name: str) -> str | bytes:
    """How ``name`` is stored in SQLite: TEXT when it is UTF-8, else a BLOB of its bytes."""
    return name if is_utf8(name) else to_bytes(name)


def from_sql(value: str | bytes) -> str:
    """The inverse of :func:`sql_value`."""
    return from_bytes(bytes(value)) if isinstance(value, (bytes, bytearray, memoryview)) else value


# -- messages ---------------------------------------------------------------------------


def display(name: str) -> str:
    """``name`` for a one-line message: control characters escaped (``\\n``, ``\\x1b``...), the rest as is.

    Undecodable bytes stay lone surrogates, which a stream opened with
    ``surrogateescape`` writes as the original bytes.
    """
    if not any(ord(ch) < 0x20 or ord(ch) == 0x7F or 0x80 <= ord(ch) < 0xA0 or ch in "\u2028\u2029"
               for ch in name):
        return name
    out = []
    for ch in name:
        code = ord(ch)
        if ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif ch in "\u2028\u2029":
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
