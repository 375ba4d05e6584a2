"""Every call the service makes on the hash database, in one place.

Reads and writes go through two :class:`~neuralhash.store.HashStore` connections:

- **reads** (lookups, lists, models) run on the event loop itself, with one
  :class:`~neuralhash.store.Matcher` per model. A lookup over the packed index
  takes well under a millisecond, less than handing it to a thread costs (the
  thread and the loop then queue for the GIL). The lookups that arrive while
  one runs are coalesced into the next ``Matcher.query`` call, at most
  :data:`CHUNK` queries at a time with the loop free between chunks, so a
  burst of single-hash requests costs one pass over the index, and a request
  of 10,000 hashes does not hold up the others. Lists are filtered on the
  matches: every list of a model shares that model's one index;
- **writes** (list changes, additions, imports) run in one thread of their
  own. SQLite's WAL mode lets reads go on while it commits, and the matcher
  notices committed rows itself (a cheap check per query), so a hash added
  over HTTP, or by ``neuralhash index add`` beside the server, is found by the
  next lookup.

Exports stream from a connection of their own, in a thread of their own, through
a bounded queue: memory stays flat whatever the size of the list.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

from ..errors import NeuralHashError
from ..store.scope import SearchScope
from ..store.search import lower_priority

#: Queries passed to one Matcher.query call at most: the loop is free again after each chunk.
CHUNK = 64

#: How long the cached view of models and lists is trusted (seconds): a list created by another
#: process is searched after at most this long.
CATALOGUE_TTL = 2.0

#: A chunk of queries estimated to take longer than this (ns) runs in the heavy-lookup thread, not on the loop.
HEAVY_NS = 2e6

#: How much less favoured (nice steps) the heavy-lookup thread is than the event loop.
HEAVY_NICE = 10

#: How often (seconds) an export's thread looks whether its export was closed while it waits.
EXPORT_POLL = 0.2


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
    limit: int = 100  # matches per query at most (the nearest)


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
    scope: SearchScope  # the lists searched, and those left out and why
    matches: list[list[Found]]  # per query, nearest first, at most the key's limit
    more: list[bool]  # per query: more stored hashes lie within reach than listed

    @property
    def model_id(self) -> str:
        return self.scope.model_id


def _store_error(exc: Exception) -> BackendError:
    """A store error as the status it deserves: 404 for what does not exist, 409 for a name taken
    by another model, else 422. StoreError has no kinds, so its message is read (a wrong reading
    only changes the status; the message is passed on as it is)."""
    from ..store.core import EmptyImportError

    text = str(exc)
    if isinstance(exc, EmptyImportError):
        return BackendError(text, 422)
    lowered = text.lower()
    status = 404 if ("no list" in lowered or "no hashes of model" in lowered or "not found" in lowered
                     or "holds no hashes" in lowered or "no model" in lowered) else 422
    if "exists" in lowered or "another model" in lowered:
        status = 409
    return BackendError(text, status)


class _Thread:
    """One thread that owns one HashStore, opened in that thread."""

    def __init__(self, name: str, opener: Callable[[], Any], *, nice: int = 0) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name, initializer=lower_priority, initargs=(nice,))
        self._opener = opener
        self.store: Any = None
        self.child: Any = None  # the ChildImport the thread waits for, if any
        self._running: set[asyncio.Future] = set()

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
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn, *args)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The request was cut off (the server's grace period is over): its SQL is interrupted,
            # so its transaction rolls back, and the caller learns so only once it has.
            while not future.done():
                self.interrupt()
                await asyncio.wait([future], timeout=0.05)
            if future.cancelled() or future.exception() is not None:
                raise
            return future.result()  # it committed before it could be stopped: its answer holds

    def interrupt(self) -> None:
        store = self.store
        if store is not None:
            store.interrupt()
        child = self.child
        if child is not None:  # an import in a child process (see .importer)
            child.stop()

    async def settle(self, timeout: float) -> None:
        """Interrupt what runs until nothing does (at most ``timeout`` seconds), without blocking the loop."""
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            self.interrupt()
            await asyncio.wait(list(self._running), timeout=0.05)

    def close(self) -> None:
        def shut() -> None:
            if self.store is not None:
                self.store.close()
                self.store = None

        done = self._pool.submit(shut)
        # A write still running now (the server's grace period is over) would hold the shutdown
        # for as long as it runs: its SQL is interrupted, its transaction rolls back.
        while not done.done():
            store = self.store
            if store is not None:
                store.interrupt()
            try:
                done.result(timeout=0.2)
            except FuturesTimeout:
                pass
        done.result()
        self._pool.shutdown(wait=True)


def check_database(db_path: str) -> None:
    """Create the database if new; StoreError (one line) when the file is not a neuralhash database."""
    from ..store import HashStore

    HashStore(db_path, create=True).close()


class Backend:
    """The hash database as the service sees it (see the module docs). Use from one event loop."""

    def __init__(self, db_path: str, *, default_model: str | None = None) -> None:
        from ..store import HashStore

        self.db_path = db_path
        self.default_model = default_model  # the model id of the server's hasher, when it has one
        check_database(db_path)  # a file that is not ours fails here, at start-up
        self._open_reader = lambda: HashStore(db_path, create=False)
        self._store: Any = None
        self._writer = _Thread("nh-write", lambda: HashStore(db_path, create=True))
        # Heavy lookups, one chunk at a time, at a lower CPU priority than the loop's small ones.
        self._heavy = _Thread("nh-heavy", self._open_reader, nice=HEAVY_NICE)
        self._matchers: dict[str, Any] = {}  # model id -> its matcher (over every list of the model)
        self._generation = 0  # bumped by every write here: the catalogue is read again
        self._seen_generation = 0
        self._catalogue: tuple[float, list[Any], list[Any]] | None = None  # (when, models, lists)
        self._pending: list[tuple[LookupKey, list[bytes], asyncio.Future]] = []
        self._draining: asyncio.Task | None = None
        self._exports: set[threading.Event] = set()  # the stop flags of the exports streaming now

    async def start(self) -> None:
        """Open the reader and build the server's model's index before the first request
        (a service pays for the multi-index tables once, at start-up, not on a request)."""
        def warm() -> None:
            self._store = self._open_reader()
            models, _ = self._fresh_catalogue()
            if self.default_model is not None and any(m.model_id == self.default_model for m in models):
                self._matcher(self.default_model)

        try:
            await asyncio.get_running_loop().run_in_executor(None, warm)
        except NeuralHashError as exc:
            raise _store_error(exc) from None

    async def stop(self, timeout: float = 5.0) -> None:
        """At shutdown: stop the exports and the writes still running (their transactions roll
        back), without blocking the loop, so that the requests cut off can still answer."""
        for stop in list(self._exports):
            stop.set()
        await self._writer.settle(timeout)
        await self._heavy.settle(timeout)

    def close(self) -> None:
        for stop in list(self._exports):  # their threads end within EXPORT_POLL
            stop.set()
        self._writer.close()
        self._heavy.close()
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = self._open_reader()
        return self._store

    # -- reads (on the event loop) ---------------------------------------------------------

    def _fresh_catalogue(self) -> tuple[list[Any], list[Any]]:
        now = time.monotonic()
        if (self._catalogue is None or now - self._catalogue[0] > CATALOGUE_TTL
                or self._seen_generation != self._generation):
            self._seen_generation = self._generation
            self._catalogue = (now, self.store.models(), self.store.lists())
        return self._catalogue[1], self._catalogue[2]

    def scope_of(self, key: LookupKey) -> SearchScope:
        """Which lists a lookup searches (and which it leaves out, and why); BackendError for a
        model or a list it cannot search. The model: ``key.model`` (an id or unique prefix), else
        the model of the lists named, else the server's model, else the only one stored."""
        from ..store import StoreError
        from ..store.scope import search_scope

        models, lists = self._fresh_catalogue()
        wanted = set(key.lists or ())
        if wanted - {s.name for s in lists}:
            self._catalogue = None  # it may predate the list: read it once more before refusing
            models, lists = self._fresh_catalogue()
        if key.model is not None and key.model == self.default_model:
            model_id = key.model  # the server's own model, whether or not it has stored hashes yet
        elif key.model is not None:
            model_id = self._read(lambda store: store.resolve_model(key.model)).model_id
        elif key.lists:
            held = {s.model_id for s in lists if s.name in wanted}
            if len(held) > 1:
                raise BackendError(f"lists: {', '.join(map(repr, key.lists))} hold hashes of different models "
                                   f"({', '.join(sorted(m[:12] for m in held))}); hashes of different models "
                                   f"do not compare: search one model's lists at a time", 422)
            model_id = next(iter(held), self.default_model or "")
        elif self.default_model is not None:
            model_id = self.default_model
        else:
            model_id = self._read(lambda store: store.resolve_model(None)).model_id
        try:
            return search_scope(lists, model_id, key.lists, where="lists")
        except StoreError as exc:
            raise BackendError(str(exc), 404 if "no list named" in str(exc) else 422) from None

    def _new_matcher(self, model_id: str) -> Any:
        """A model's matcher over all its lists, multi-index tables built (seconds for 10 million)."""
        matcher = self.store.matcher(model_id, None)
        if hasattr(matcher, "build"):
            matcher.build()
        return matcher

    async def _fresh_matcher(self, model_id: str) -> Any:
        """The model's matcher, made in a thread the first time (the loop serves the other requests
        meanwhile). It follows the model's lists and the rows committed by anyone, without a rebuild
        a lookup would wait for (see neuralhash.store.search)."""
        cached = self._matchers.get(model_id)
        if cached is None:
            matcher = await asyncio.get_running_loop().run_in_executor(None, self._new_matcher, model_id)
            cached = self._matchers.setdefault(model_id, matcher)
        return cached

    def _matcher(self, model_id: str) -> Any:
        cached = self._matchers.get(model_id)
        if cached is None:  # not made by _fresh_matcher (start-up): made here
            cached = self._matchers[model_id] = self._new_matcher(model_id)
        return cached

    def _is_heavy(self, matcher: Any, max_distance: int, n_queries: int) -> bool:
        """Whether these queries would hold the event loop longer than HEAVY_NS (estimated; a large
        delta of rows committed since the index was built counts too)."""
        return matcher.cost(max_distance, n_queries) > HEAVY_NS

    def _found(self, per_query: Sequence[Any], limit: int) -> tuple[list[Found], bool]:
        return ([Found(m.path, m.list, m.hex, int(m.distance), int(m.row)) for m in per_query[:limit]],
                len(per_query) > limit)

    def _run_lookups(self, batch: list[tuple[LookupKey, list[bytes], asyncio.Future]]
                     ) -> list[tuple[list[list[Found]], list[bool]] | BaseException]:
        """One Matcher.query for the lookups that share (model, lists, distance, limit)."""
        out: list[Any] = [None] * len(batch)
        groups: dict[LookupKey, list[int]] = {}
        for i, (key, _, _) in enumerate(batch):
            groups.setdefault(key, []).append(i)
        for key, members in groups.items():
            try:
                queries = [q for i in members for q in batch[i][1]]
                found = self._matcher(key.model).query(queries, key.max_distance, limit=key.limit + 1,
                                                       only_lists=key.lists)
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
                qs = batch[i][1]
                pairs = [self._found(per, key.limit) for per in found[start:start + len(qs)]]
                out[i] = ([p[0] for p in pairs], [p[1] for p in pairs])
                start += len(qs)
        return out

    async def lookup(self, key: LookupKey, queries: Sequence[bytes]) -> LookupResult:
        """Stored hashes within ``key.max_distance`` of each query (12-byte digests), nearest first."""
        scope = self.scope_of(key)
        matches: list[list[Found]] = []
        more: list[bool] = []
        async for found, cut in self.lookup_chunks(key, queries, scope):
            matches += found
            more += cut
        return LookupResult(scope, matches, more)

    async def lookup_chunks(self, key: LookupKey, queries: Sequence[bytes], scope: SearchScope
                            ) -> AsyncIterator[tuple[list[list[Found]], list[bool]]]:
        """:meth:`lookup` a chunk of queries at a time, (matches, more) per query of the chunk: a
        caller streams its answer, and stops early by closing the iterator.

        Light chunks (estimated under HEAVY_NS) run on the event loop, coalesced with the other
        requests' (see the module docs); heavy ones run in a thread of their own, one chunk at a time
        for all heavy requests together, so that small lookups stay fast while a large one runs."""
        queries = list(queries)
        if not scope.searched:  # nothing of this model to search: the scope says what was left out
            for i in range(0, len(queries), CHUNK):
                n = len(queries[i:i + CHUNK])
                yield [[] for _ in range(n)], [False] * n
            return
        lists = tuple(s.name for s in scope.searched) if key.lists is not None else None
        key = LookupKey(scope.model_id, lists, key.max_distance, key.limit)
        try:
            matcher = await self._fresh_matcher(scope.model_id)
        except NeuralHashError as exc:
            raise _store_error(exc) from None
        for i in range(0, len(queries), CHUNK):
            part = queries[i:i + CHUNK]
            if self._is_heavy(matcher, key.max_distance, len(part)):
                def search(store: Any, part: list[bytes] = part) -> list[tuple[list[Found], bool]]:
                    found = matcher.query(part, key.max_distance, limit=key.limit + 1, only_lists=key.lists,
                                          labels_from=store)
                    return [self._found(per, key.limit) for per in found]  # here too, not on the loop

                pairs = await self._heavy.run(search)
                yield [p[0] for p in pairs], [p[1] for p in pairs]
                continue
            future: asyncio.Future = asyncio.get_running_loop().create_future()
            self._pending.append((key, part, future))
            if self._draining is None or self._draining.done():
                self._draining = asyncio.create_task(self._drain())
            yield await future

    async def _drain(self) -> None:
        # Lookups that arrive while a chunk runs wait in _pending and go together in the next one.
        while self._pending:
            await asyncio.sleep(0)  # let the requests already received add theirs
            batch: list[tuple[LookupKey, list[bytes], asyncio.Future]] = []
            size = 0
            while self._pending and (not batch or size + len(self._pending[0][1]) <= CHUNK):
                item = self._pending.pop(0)
                batch.append(item)
                size += len(item[1])
            try:
                results = self._run_lookups(batch)
            except Exception as exc:  # the futures must not wait forever, whatever happened
                results = [exc] * len(batch)
            for (_, _, future), result in zip(batch, results):
                if future.done():
                    continue  # the client went away
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def lists(self) -> list[Any]:
        """StoredList(name, model_id, count) of every list."""
        return self._read(lambda store: store.lists())

    async def models(self) -> list[Any]:
        """StoredModel(model_id, description, count) of every model."""
        return self._read(lambda store: store.models())

    async def get_list(self, name: str) -> Any:
        for s in await self.lists():
            if s.name == name:
                return s
        raise BackendError(f"{self.db_path}: no list named {name!r}", 404)

    async def resolve_model(self, spec: str | None) -> Any:
        return self._read(lambda store: store.resolve_model(spec))

    def _read(self, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(self.store)
        except BackendError:
            raise
        except NeuralHashError as exc:
            raise _store_error(exc) from None

    async def health(self, timeout: float) -> None:
        """BackendError 503 unless a thread of the pool, the database and a lookup each answer within
        ``timeout`` seconds (a server whose threads are all stuck must not say it is well)."""
        loop = asyncio.get_running_loop()
        checks = [
            ("the server's thread pool", lambda: loop.run_in_executor(None, int)),
            ("the database", lambda: asyncio.to_thread(self._probe_database)),
            ("lookups", self._probe_lookup),
        ]
        for what, check in checks:
            try:
                await asyncio.wait_for(check(), timeout)
            except asyncio.TimeoutError:
                raise BackendError(f"unhealthy: {what} did not answer within {timeout:g} s", 503) from None
            except Exception as exc:
                raise BackendError(f"unhealthy: {what}: {exc}", 503) from None

    def _probe_database(self) -> None:
        from ..store import HashStore

        with HashStore(self.db_path, create=False) as store:
            store.lists()

    async def _probe_lookup(self) -> None:
        models, _ = self._fresh_catalogue()
        if models:
            await self.lookup(LookupKey(models[0].model_id, None, 0, 1), [bytes(12)])

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

    async def import_file(self, source: Any, name: str, model_id: str, label: str | None = None) -> Any:
        """ImportReport(imported, replaced, skipped) of a hash list in any format ``index import`` reads
        (``source``: a file object; a large one named on disk is imported in a child process, see
        :mod:`.importer`); ``label`` names the entries the file leaves unnamed (LABEL:LINE)."""
        from .importer import CHILD_IMPORT_BYTES, ChildImport

        kwargs = {"list_name": name, "model_id": model_id, "label": label, "require_entries": True}
        path = getattr(source, "name", None)
        if isinstance(path, str) and os.path.isfile(path) and os.path.getsize(path) >= CHILD_IMPORT_BYTES:
            child = ChildImport(self.db_path, path, **kwargs)

            def write(store: Any) -> Any:
                self._writer.child = child
                try:
                    return child.run()
                finally:
                    self._writer.child = None

        else:
            def write(store: Any) -> Any:
                return store.import_file(source, **kwargs)

        try:
            return await self._writer.run(write)
        finally:
            self._changed()

    # -- export (a connection and a thread of its own) ----------------------------------------

    async def extra_fields(self, name: str) -> list[str]:
        """The extra fields (CSV columns) the entries of list ``name`` hold."""
        from ..store import HashStore

        await self.get_list(name)  # 404 for a missing list

        def read() -> list[str]:
            with HashStore(self.db_path, create=False) as store:
                return store.extra_fields(list_name=name)

        return await asyncio.to_thread(read)

    async def export(self, name: str, render: Callable[[Any], str], header: str = "") -> AsyncIterator[bytes]:
        """The rows of list ``name`` rendered one by one, as chunks of UTF-8 (surrogateescape) bytes."""
        from ..store import HashStore

        await self.get_list(name)  # 404 before the response starts
        loop = asyncio.get_running_loop()
        # The rows cross from the thread to the loop through an asyncio queue; a semaphore bounds
        # the chunks in flight. No thread of a pool ever waits on a client: a client that stops
        # reading (or hangs up) holds only this export's own thread, which gives up within
        # EXPORT_POLL seconds of the export being closed (and at shutdown).
        chunks: asyncio.Queue = asyncio.Queue()
        room = threading.Semaphore(8)
        stop = threading.Event()
        self._exports.add(stop)
        done = object()

        def put(item: Any) -> bool:
            while not stop.is_set():
                if room.acquire(timeout=EXPORT_POLL):
                    try:
                        loop.call_soon_threadsafe(chunks.put_nowait, item)
                    except RuntimeError:  # the loop is closed: nobody is reading
                        return False
                    return True
            return False

        def produce() -> None:
            try:
                with HashStore(self.db_path, create=False) as store:
                    buf: list[str] = [header] if header else []
                    size = len(header)
                    for row in store.export(list_name=name):
                        if stop.is_set():
                            return
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
        try:
            while True:
                item = await chunks.get()
                room.release()
                if item is done:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()
            self._exports.discard(stop)
