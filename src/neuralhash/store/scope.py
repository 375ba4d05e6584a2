"""Which lists a search covers, and which it leaves out and why.

A hash is only ever compared with hashes of the same model, so a search over
"every list" quietly passes over the lists of other models. That is right, but
never silent: every search reports its :class:`SearchScope`, and the CLI, the
Python API and the service show the lists it skipped (issue 17: an imported
list labelled with another model id was not searched, and nothing said so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..hashing.model_ids import short_model_id as _short
from .db import StoreError
from .core import StoredList


@dataclass(frozen=True)
class SkippedList:
    name: str
    model_id: str
    count: int
    reason: str


@dataclass(frozen=True)
class SearchScope:
    model_id: str
    searched: tuple[StoredList, ...]
    skipped: tuple[SkippedList, ...]

    def describe(self) -> str:
        """One line for people: what was searched, and what was left out."""
        searched = ", ".join(f"{s.name!r} ({s.count})" for s in self.searched) or "no list"
        line = f"searched {searched} of model {_short(self.model_id)}"
        if self.skipped:
            line += "; skipped " + ", ".join(f"{s.name!r} ({s.count}, {s.reason})" for s in self.skipped)
        return line

    def as_dict(self) -> dict:
        return {
            "model_id": self.model_id,
            "searched": [{"name": s.name, "count": s.count} for s in self.searched],
            "skipped": [{"name": s.name, "model_id": s.model_id, "count": s.count, "reason": s.reason}
                        for s in self.skipped],
        }


def search_scope(lists: Sequence[StoredList], model_id: str, requested: Sequence[str] | None = None,
                 *, where: str = "database") -> SearchScope:
    """The scope of a search of ``model_id``'s hashes over ``requested`` lists (None: every list).

    Without ``requested``, the lists of other models are skipped, each with its reason. Named lists
    are searched or refused: an unknown name, an empty selection or a list of another model is a
    :class:`StoreError` (the user named it, so leaving it out would be a silent miss)."""
    if requested is None:
        searched = tuple(s for s in lists if s.model_id == model_id)
        skipped = tuple(
            SkippedList(s.name, s.model_id, s.count,
                        f"holds hashes of model {_short(s.model_id)}, not {_short(model_id)}")
            for s in lists if s.model_id != model_id)
        return SearchScope(model_id, searched, skipped)
    if not requested:
        raise StoreError(f"{where}: an empty selection of lists searches nothing; name at least one list "
                         f"or leave the selection out to search every list of the model")
    by_name = {s.name: s for s in lists}
    searched_list = []
    for name in dict.fromkeys(requested):
        found = by_name.get(name)
        if found is None:
            known = ", ".join(repr(n) for n in by_name) or "none"
            raise StoreError(f"{where}: no list named {name!r} (lists: {known})")
        if found.model_id != model_id:
            raise StoreError(f"{where}: list {name!r} holds hashes of model {_short(found.model_id)}, not "
                             f"{_short(model_id)}; hashes of different models do not compare")
        searched_list.append(found)
    return SearchScope(model_id, tuple(searched_list), ())
