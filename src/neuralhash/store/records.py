"""What a store holds and reports (its records), and the helpers every part of it uses."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..lists import hashlists
from ..files.pathnames import to_bytes
from .db import StoreError


IMPORTED_MODEL = "imported"
DEFAULT_LIST = "images"
_IN_CHUNK = 900  # SQLite's bound-parameter limit is 999


@dataclass(frozen=True)
class StoredModel:
    key: int  # row id in the models table
    model_id: str
    description: str
    count: int


@dataclass(frozen=True)
class StoredList:
    name: str
    model_id: str
    count: int


@dataclass(frozen=True)
class StoredHash:
    row: int
    path: str
    hex: str
    model_id: str
    list: str = ""
    extra_json: str | None = None  # the entry's extra fields (a JSON object's text), see neuralhash.lists.hashlists

    @property
    def extra(self) -> dict[str, Any] | None:
        return None if self.extra_json is None else json.loads(self.extra_json)


@dataclass
class AddReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass
class ImportReport:
    imported: int = 0
    replaced: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason), the first MAX_SKIPPED
    list: str = ""
    skipped_total: int = 0  # malformed lines in all (a file of garbage must not fill memory with reasons)
    model_id: str = ""


class EmptyImportError(StoreError):
    """An import that was asked to bring entries brought none (every line malformed, or none)."""


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

parse_hex = hashlists.parse_hex


def _raw(name: str) -> bytes:
    return to_bytes(name)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy's default hash-based unique is several times slower on millions)."""
    a = np.sort(a)
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if a.size else a


def _check_list_name(name: str, where: str) -> None:
    if not isinstance(name, str) or not name or name != name.strip() or "," in name or not name.isprintable():
        raise StoreError(f"{where}: {name!r} is not a list name (printable, no comma, no surrounding blanks)")
