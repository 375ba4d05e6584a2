"""Every call the service makes on the hash database, in one place.

SQLite connections belong to the thread that opened them, so the backend owns
two threads, each with its own :class:`~neuralhash.store.HashStore`:

- the **reader** runs lookups (and the small reads: lists, models). It keeps
  one :class:`~neuralhash.store.Matcher` per (model, lists) and coalesces the
  lookups that arrive while it is busy into one ``Matcher.query`` call, so a
  burst of single-hash requests costs one pass over the index, not one each;
- the **writer** runs list changes, additions and imports. SQLite's WAL mode
  lets the reader go on while the writer commits, and a row the writer has
  committed is seen by the reader's next query (the matcher checks for new
  rows itself), so a hash added over HTTP is found by the next lookup.

Exports stream from a connection of their own, in a thread of their own, through
a bounded queue: memory stays flat whatever the size of the list.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

from ..errors import NeuralHashError

#: Queries passed to one Matcher.query call at most (a bounded latency for the requests behind them).
MAX_COALESCED = 4096

#: How long the reader trusts its cached view of models and lists before reading them again (seconds).
CATALOGUE_TTL = 2.0


class BackendError(NeuralHashError):
    """A request the database cannot serve: ``status`` is the HTTP status the service answers with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LookupKey:
    """Lookups that can share one Matcher.query call."""

    model: str | None  # a model id or unique prefix; None: the server's model if stored, else the only one
    lists: tuple[str, ...] | None  # None: every list of the model
    max_distance: int


@dataclass(frozen=True)
class Found:
    """One stored hash within reach of a query."""

    path: str  # the label (file name) stored with the hash
    list: str
    hex: str
    distance: int
    row: int


@dataclass(frozen=True)
class LookupResult:
    model_id: str
    matches: list[list[Found]]  # per query, nearest first


def _store_error(exc: Exception) -> BackendError:
    """A store error as the status it deserves: 404 for what does not exist, else 422."""
    text = str(exc)
    lowered = text.lower()
    status = 404 if ("no list" in lowered or "no hashes of model" in lowered or "not found" in lowered
                     or "holds no hashes" in lowered or "no model" in lowered) else 422
    if "exists" in lowered or "another model" in lowered:
        status = 409
    return BackendError(text, status)


class _Thread:
    """One thread that owns one HashStore, opened in that thread."""

    def __init__(self, name: str, opener: Callable[[], Any]) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._opener = opener
        self.store: Any = None

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.store is None:
            self.store = self._opener()
        try:
            return fn(self.store, *args)
        except BackendError:
            raise
        except NeuralHashError as exc:
            raise _store_error(exc) from None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn, *args)

    def close(self) -> None:
        def shut() -> None:
            if self.store is not None:
                self.store.close()
                self.store = None

        self._pool.submit(shut).result()
        self._pool.shutdown(wait=True)


def check_database(db_path: str) -> None:
    """Create the database if new; StoreError (one line) when the file is not a neuralhash database."""
    from ..store import HashStore

    HashStore(db_path, create=True).close()


class Backend:
    """The hash database as the service sees it (see the module docs)."""

    def __init__(self, db_path: str, *, default_model: str | None = None) -> None:
        from ..store import HashStore

        self.db_path = db_path
        self.default_model = default_model  # the model id of the server's hasher, when it has one
        check_database(db_path)  # a file that is not ours fails here, at start-up
        self._reader = _Thread("nh-read", lambda: HashStore(db_path, create=False))
        self._writer = _Thread("nh-write", lambda: HashStore(db_path, create=True))
        self._matchers: dict[tuple[str, tuple[str, ...] | None], Any] = {}
        self._generation = 0  # bumped by every change to the set of lists; the reader drops its matchers
        self._seen_generation = 0
        self._catalogue: tuple[float, list[Any], list[Any]] | None = None  # (when, models, lists)
        self._pending: list[tuple[LookupKey, list[bytes], asyncio.Future]] = []
        self._draining: asyncio.Task | None = None

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    # -- reads (reader thread) ---------------------------------------------------------------

    def _fresh_catalogue(self, store: Any) -> tuple[list[Any], list[Any]]:
        now = time.monotonic()
        if (self._catalogue is None or now - self._catalogue[0] > CATALOGUE_TTL
                or self._seen_generation != self._generation):
            if self._seen_generation != self._generation:
                self._matchers.clear()
                self._seen_generation = self._generation
            self._catalogue = (now, store.models(), store.lists())
        return self._catalogue[1], self._catalogue[2]

    def _model_of(self, store: Any, spec: str | None) -> Any:
        models, _ = self._fresh_catalogue(store)
        if spec is None and self.default_model is not None:
            for m in models:
                if m.model_id == self.default_model:
                    return m
        return store.resolve_model(spec)

    def _matcher(self, store: Any, model_id: str, lists: tuple[str, ...] | None) -> Any:
        key = (model_id, lists)
        matcher = self._matchers.get(key)
        if matcher is None:
            if lists is not None:
                _, stored = self._fresh_catalogue(store)
                by_name = {s.name: s for s in stored}
                for name in lists:
                    found = by_name.get(name)
                    if found is None:
                        # The cache may predate the list: read it once more before refusing.
                        by_name = {s.name: s for s in store.lists()}
                        found = by_name.get(name)
                    if found is None:
                        raise BackendError(f"{self.db_path}: no list named {name!r}", 404)
                    if found.model_id != model_id:
                        raise BackendError(
                            f"list {name!r} holds hashes of model {found.model_id[:12]}, not {model_id[:12]}: "
                            "hashes of different models do not compare", 422)
            matcher = self._matchers[key] = store.matcher(model_id, list(lists) if lists is not None else None)
        return matcher

    def _run_lookups(self, store: Any, batch: list[tuple[LookupKey, list[bytes], asyncio.Future]]
                     ) -> list[LookupResult | BaseException]:
        """In the reader thread: one Matcher.query per key for all the lookups of that key."""
        out: list[LookupResult | BaseException] = [None] * len(batch)  # type: ignore[list-item]
        groups: dict[LookupKey, list[int]] = {}
        for i, (key, _, _) in enumerate(batch):
            groups.setdefault(key, []).append(i)
        for key, members in groups.items():
            try:
                model = self._model_of(store, key.model)
                matcher = self._matcher(store, model.model_id, key.lists)
                queries = [q for i in members for q in batch[i][1]]
                found = matcher.query(queries, key.max_distance) if queries else []
            except BackendError as exc:
                for i in members:
                    out[i] = exc
                continue
            except NeuralHashError as exc:
                for i in members:
                    out[i] = _store_error(exc)
                continue
            start = 0
            for i in members:
                n = len(batch[i][1])
                out[i] = LookupResult(model.model_id, [
                    [Found(m.path, m.list, m.hex, int(m.distance), int(m.row)) for m in per_query]
                    for per_query in found[start:start + n]
                ])
                start += n
        return out

    async def lookup(self, key: LookupKey, queries: Sequence[bytes]) -> LookupResult:
        """Stored hashes within ``key.max_distance`` of each query (12-byte digests), nearest first."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((key, list(queries), future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        # Lookups arriving while the reader works pile up in _pending and go together next time.
        while self._pending:
            batch: list[tuple[LookupKey, list[bytes], asyncio.Future]] = []
            size = 0
            while self._pending and (not batch or size + len(self._pending[0][1]) <= MAX_COALESCED):
                item = self._pending.pop(0)
                batch.append(item)
                size += len(item[1])
            try:
                results = await self._reader.run(self._run_lookups, batch)
            except BaseException as exc:  # the futures must not wait forever, whatever happened
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else BackendError(str(exc), 500))
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, _, future), result in zip(batch, results):
                if future.done():
                    continue  # the client went away
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def lists(self) -> list[Any]:
        """StoredList(name, model_id, count) of every list."""
        return await self._reader.run(lambda store: store.lists())

    async def models(self) -> list[Any]:
        """StoredModel(model_id, description, count) of every model."""
        return await self._reader.run(lambda store: store.models())

    async def get_list(self, name: str) -> Any:
        def find(store: Any) -> Any:
            for s in store.lists():
                if s.name == name:
                    return s
            raise BackendError(f"{self.db_path}: no list named {name!r}", 404)

        return await self._reader.run(find)

    async def resolve_model(self, spec: str | None) -> Any:
        return await self._reader.run(self._model_of, spec)

    # -- writes (writer thread) --------------------------------------------------------------

    def _changed(self) -> None:
        self._generation += 1

    async def create_list(self, name: str, model_id: str) -> Any:
        try:
            return await self._writer.run(lambda store: store.create_list(name, model_id))
        finally:
            self._changed()

    async def delete_list(self, name: str) -> int:
        def delete(store: Any) -> int:
            if not any(s.name == name for s in store.lists()):
                raise BackendError(f"{self.db_path}: no list named {name!r}", 404)
            return store.delete_list(name)

        try:
            return await self._writer.run(delete)
        finally:
            self._changed()

    async def list_model(self, name: str) -> str | None:
        """The model of list ``name``, None when there is no such list."""
        for s in await self._writer.run(lambda store: store.lists()):
            if s.name == name:
                return s.model_id
        return None

    async def add_hashes(self, name: str, entries: Iterable[tuple[str, bytes]], model_id: str) -> int:
        """Committed when this returns: the next lookup sees the rows."""
        rows = list(entries)
        try:
            return await self._writer.run(lambda store: store.add_hashes(name, rows, model_id=model_id))
        finally:
            self._changed()

    async def import_file(self, source: Any, name: str, model_id: str) -> Any:
        """ImportReport(imported, replaced, skipped) of a hash list in any format ``index import`` reads."""
        try:
            return await self._writer.run(lambda store: store.import_file(source, list_name=name, model_id=model_id))
        finally:
            self._changed()

    # -- export (a connection and a thread of its own) ----------------------------------------

    async def export(self, name: str, render: Callable[[Any], str], header: str = "") -> AsyncIterator[bytes]:
        """The rows of list ``name`` rendered one by one, as chunks of UTF-8 (surrogateescape) bytes."""
        from ..store import HashStore

        await self.get_list(name)  # 404 before the response starts
        chunks: queue.Queue = queue.Queue(maxsize=8)
        stop = threading.Event()
        done = object()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    chunks.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                with HashStore(self.db_path, create=False) as store:
                    buf: list[str] = [header] if header else []
                    size = len(header)
                    for row in store.export(list_name=name):
                        text = render(row)
                        buf.append(text)
                        size += len(text)
                        if size >= 1 << 16:
                            if not put("".join(buf).encode("utf-8", "surrogateescape")):
                                return
                            buf, size = [], 0
                    if buf:
                        put("".join(buf).encode("utf-8", "surrogateescape"))
            except Exception as exc:  # the response has started: all that is left is to stop it
                put(exc)
            finally:
                put(done)

        thread = threading.Thread(target=produce, name="nh-export", daemon=True)
        thread.start()
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await loop.run_in_executor(None, chunks.get)
                if item is done:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()
