"""Lists and models: a database's named lists, each of one model."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .db import StoreError
from .records import StoredModel, StoredList, _check_list_name


class _Catalog:
    """HashStore: lists and models."""

    def models(self) -> list[StoredModel]:
        with self._lock, self._sql():
            rows = self._db.execute(
                "SELECT m.id, m.model_id, m.description, coalesce(sum(l.count), 0) FROM models m "
                "LEFT JOIN lists l ON l.model = m.id GROUP BY m.id ORDER BY m.id").fetchall()
        return [StoredModel(*row) for row in rows]

    def lists(self) -> list[StoredList]:
        with self._lock, self._sql():
            rows = self._db.execute(
                "SELECT l.name, m.model_id, l.count FROM lists l JOIN models m ON m.id = l.model "
                "ORDER BY l.name").fetchall()
        return [StoredList(*row) for row in rows]

    def _list_row(self, name: str) -> tuple[int, str] | None:
        row = self._db.execute("SELECT l.id, m.model_id FROM lists l JOIN models m ON m.id = l.model "
                               "WHERE l.name=?", (name,)).fetchone()
        return (row[0], row[1]) if row else None

    def _model_key(self, model_id: str, description: str = "") -> int:
        row = self._db.execute("SELECT id FROM models WHERE model_id=?", (model_id,)).fetchone()
        if row is not None:
            if description:
                self._db.execute("UPDATE models SET description=? WHERE id=? AND description=''",
                                 (description, row[0]))
            return row[0]
        return self._db.execute("INSERT INTO models (model_id, description) VALUES (?, ?)",
                                (model_id, description)).lastrowid

    def _list_key(self, name: str, model_id: str, description: str = "") -> int:
        """The list's key, created when absent; StoreError if it holds another model's hashes."""
        _check_list_name(name, self.where)
        found = self._list_row(name)
        if found is not None:
            key, holds = found
            if holds != model_id:
                raise StoreError(f"{self.where}: list {name!r} holds hashes of model {holds[:12]}, not "
                                 f"{model_id[:12]}; hashes of different models do not mix (choose another list)")
            return key
        model = self._model_key(model_id, description)
        return self._db.execute("INSERT INTO lists (name, model) VALUES (?, ?)", (name, model)).lastrowid

    def create_list(self, name: str, model_id: str, *, description: str = "") -> StoredList:
        """A new empty list (or the existing one of that model); StoreError if the name holds another model."""
        with self._writing(f"list {name!r}"):
            key = self._list_key(name, model_id, description)
        (count,) = self._db.execute("SELECT count FROM lists WHERE id=?", (key,)).fetchone()
        return StoredList(name, model_id, count)

    def delete_list(self, name: str) -> int:
        """Remove a list and its hashes; the number of hashes removed."""
        with self._writing(f"removing list {name!r}") as tx:
            found = self._list_row(name)
            if found is None:
                raise StoreError(f"{self.where}: no list named {name!r} (lists: {self._list_names()})")
            key = found[0]
            total = tx.n0 + tx.pending
            pos = np.flatnonzero(tx.packed.columns["list"][:total] == key)
            removed = tx.delete(tx.packed.columns["rowid"][pos])
            self._db.execute("DELETE FROM images WHERE list=?", (key,))  # rows the index did not list
            self._db.execute("DELETE FROM lists WHERE id=?", (key,))
            tx.counts.pop(key, None)
        return removed

    def _list_names(self) -> str:
        names = [n for (n,) in self._db.execute("SELECT name FROM lists ORDER BY name")]
        return ", ".join(repr(n) for n in names) or "none"

    def resolve_model(self, model_id: str | None, *, option: str = "model_id") -> StoredModel:
        """The stored model with this id or unique id prefix, or the only one when ``model_id`` is None.
        ``option``: the name an error tells the user to set (a command passes ``--model-id``)."""
        models = self.models()
        if model_id is not None:
            exact = [m for m in models if m.model_id == model_id]
            found = exact or [m for m in models if m.model_id.startswith(model_id)]
            if len(found) == 1:
                return found[0]
            known = ", ".join(f"{m.model_id[:12]} ({m.description or 'no description'})" for m in models) or "none"
            if found:
                raise StoreError(f"{self.where}: {model_id!r} is the start of several model ids ({known}); "
                                 f"give more digits")
            raise StoreError(f"{self.where}: no hashes of model {model_id!r} (stored models: {known})")
        live = [m for m in models if m.count] or models
        if len(live) == 1:
            return live[0]
        if not live:
            raise StoreError(f"{self.where}: the database holds no hashes yet")
        listed = "; ".join(f"{m.model_id[:12]} ({m.count} hash{'' if m.count == 1 else 'es'}, "
                           f"{m.description or 'no description'})" for m in live)
        raise StoreError(f"{self.where}: hashes of several models are stored ({listed}); choose one with {option}")

    def _list_keys(self, model: StoredModel, lists: Sequence[str] | None) -> dict[int, str]:
        with self._lock, self._sql():
            rows = self._db.execute("SELECT id, name, model FROM lists").fetchall()
        if lists is None:
            return {k: n for k, n, m in rows if m == model.key}
        by_name = {n: (k, m) for k, n, m in rows}
        out = {}
        for name in lists:
            if name not in by_name:
                raise StoreError(f"{self.where}: no list named {name!r} (lists: {self._list_names()})")
            k, m = by_name[name]
            if m != model.key:
                raise StoreError(f"{self.where}: list {name!r} holds hashes of another model than "
                                 f"{model.model_id[:12]}; hashes of different models do not compare")
            out[k] = name
        return out
