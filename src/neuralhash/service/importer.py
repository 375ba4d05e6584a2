"""A large hash-list import runs in a process of its own: parsing millions of lines in Python
holds the GIL, and in a thread of the server it made every lookup wait its turn for it.

The writer thread (one write at a time, see :mod:`.backend`) starts the process and waits for
its report; :meth:`ChildImport.stop` ends it, and its transaction is then rolled back by SQLite
(the packed index, ahead of the rows, is re-verified by the next writer): the same as a
``kill -9`` of ``neuralhash index import``, which loses nothing committed.
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

from ..errors import NeuralHashError
from ..store import StoreError

#: Bodies at least this large are imported in a child process; smaller ones in the writer thread.
CHILD_IMPORT_BYTES = 1 << 20


def _run(db: str, path: str, kwargs: dict, conn: Any) -> None:
    """In the child: the import, and its report or its error sent back."""
    from ..store import HashStore

    try:
        with HashStore(db, create=True) as store:
            conn.send(("ok", store.import_file(path, **kwargs)))
    except NeuralHashError as exc:
        conn.send(("error", type(exc), str(exc)))
    except BaseException as exc:  # noqa: BLE001 - whatever it is, the parent reports it in one line
        conn.send(("error", StoreError, f"{db}: the import failed ({type(exc).__name__}: {exc})"))
    finally:
        conn.close()


class ChildImport:
    """One import in a child process; :meth:`run` (in the writer thread) returns its ImportReport."""

    def __init__(self, db: str, path: str, **kwargs: Any) -> None:
        self.db, self.path, self.kwargs = db, path, kwargs
        self._stop = threading.Event()

    def stop(self) -> None:
        """End the import now (any thread): it is rolled back, and :meth:`run` raises StoreError."""
        self._stop.set()

    def run(self) -> Any:
        ctx = multiprocessing.get_context("forkserver")
        ours, theirs = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_run, args=(self.db, self.path, self.kwargs, theirs), daemon=True,
                           name="nh-import")
        proc.start()
        theirs.close()
        try:
            while not ours.poll(0.1):
                if self._stop.is_set():
                    raise StoreError(f"{self.db}: the import was stopped before it committed; nothing of it "
                                     "was stored (rolled back)")
                if not proc.is_alive() and not ours.poll(0):
                    raise StoreError(f"{self.db}: the import process ended without a report "
                                     f"(exit code {proc.exitcode}); nothing of it was stored")
            try:
                answer = ours.recv()
            except EOFError:
                raise StoreError(f"{self.db}: the import process ended without a report "
                                 f"(exit code {proc.exitcode}); nothing of it was stored") from None
            if answer[0] == "ok":
                return answer[1]
            kind, message = answer[1], answer[2]
            raise (kind(message) if isinstance(kind, type) and issubclass(kind, NeuralHashError)
                   else StoreError(message))
        finally:
            if proc.is_alive():
                proc.kill()  # an uncommitted transaction: SQLite rolls it back
            proc.join()
            ours.close()
