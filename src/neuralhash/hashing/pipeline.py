"""Decoding many images in worker processes, in input order, with bounded memory.

:func:`decoded` turns an iterable of inputs into ``(item, pixels, error)``
tuples in the same order: ``pixels`` the 360 x 360 x 3 uint8 array of
:func:`~neuralhash.hashing.image.decode`, or ``error`` the reason it failed.

Worker processes (``concurrent.futures.ProcessPoolExecutor``, ``forkserver``
start method where available, else ``spawn``: the parent runs ONNX Runtime's
threads, which ``fork`` does not mix well with) run :func:`decode_task`. At
most ``window`` tasks are submitted and not yet consumed: items are pulled
from the input lazily, as the head of the queue is consumed, and the queue is
a FIFO of futures, so the order is the input's whatever order the workers
finish in. Pillow images and arrays are decoded in this process when they
reach the head (they are in memory already); paths and bytes go to workers.

When the next result is still being decoded, :data:`STALL` is yielded (on
request) so that the consumer runs the network on the images it already holds
instead of waiting: inference overlaps decoding. The forkserver preloads this
module (when nobody configured it otherwise), so workers start in
milliseconds rather than importing NumPy and Pillow each.

A worker that dies (a decoder crash, the OOM killer) breaks the whole pool:
the pool is restarted and the tasks that were in flight are retried one at
a time, so the input that kills a worker is the only one reported as failed.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import sys
import threading
import weakref
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import NeuralHashError
from .image import decode, describe, resolve_max_pixels

#: Fewer items than this are decoded in the calling process (pool start-up would dominate).
MIN_ITEMS_FOR_POOL = 2

#: Worker processes above this many per CPU only add idle processes and memory: capped.
MAX_WORKERS_PER_CPU = 4

#: Consecutive worker deaths (on retried items, one at a time) after which the run stops.
MAX_CONSECUTIVE_CRASHES = 3

Entry = tuple[Any, "np.ndarray | None", "str | None"]

#: Yielded by :func:`decoded` (with ``stall_marks=True``) when the next result is not ready yet.
STALL = None


def decode_task(item: Any, *, exif_transpose: bool, fast: bool, max_pixels: int) -> tuple[np.ndarray | None, str | None]:
    """Run in a worker: (pixels, None) or (None, reason). Top level, so ``spawn`` can import it.
    ``max_pixels`` is the caller's resolved limit (a worker's Pillow default may differ)."""
    return _decode_here(item, exif_transpose=exif_transpose, fast=fast, max_pixels=max_pixels)


def _worker_init() -> None:
    """Workers leave Ctrl-C to the parent, which stops them (no traceback from every worker), and
    exit when the parent dies, however it dies (``kill -9`` included: a worker waiting for work
    would otherwise block on its pipe for good)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()


#: prctl(2) option: the signal a process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def _exit_with_parent() -> None:
    """Two guards. On Linux, ``PR_SET_PDEATHSIG``: SIGKILL when the process that forked this one
    (the forkserver, which itself exits with the parent) dies. Everywhere, a thread waiting on
    multiprocessing's parent sentinel, a pipe whose other end only the parent holds: it reads end
    of file when the parent is gone, and the worker exits."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the sentinel thread below still watches
            pass
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch() -> None:
        from multiprocessing.connection import wait

        try:
            wait([sentinel])
        except OSError:
            pass  # a closed sentinel: the parent is gone as well
        os._exit(1)  # no clean-up to do: a decoding worker holds nothing the parent waits for

    threading.Thread(target=watch, name="neuralhash-parent-watch", daemon=True).start()


def _decode_here(item: Any, *, exif_transpose: bool, fast: bool,
                 max_pixels: int) -> tuple[np.ndarray | None, str | None]:
    try:
        return decode(item, exif_transpose=exif_transpose, fast=fast, max_pixels=max_pixels), None
    except NeuralHashError as exc:
        return None, str(exc)
    except Exception as exc:  # a decoder bug must not stop the run either
        return None, f"{describe(item)}: cannot decode image ({type(exc).__name__}: {exc})"


def _goes_to_worker(item: Any) -> bool:
    return isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview))


def _failed_in_transport(future: Future | None, exc: BaseException) -> bool:
    """True when ``exc`` is the task's own failure (decode_task never raises: the item or
    its result could not be pickled), not something raised while this process waited."""
    return future is not None and future.done() and not future.cancelled() and future.exception(0) is exc


def _context():
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # Workers forked from a server that has imported this module start in milliseconds
    # instead of importing NumPy and Pillow each (~0.2 s). Only when the server is not
    # running yet and nobody chose its preload list (the default is ["__main__"]).
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver
        if server._forkserver_pid is None and server._preload_modules == ["__main__"]:
            ctx.set_forkserver_preload(["__main__", __name__])
    except Exception:  # private details of another Python version: only start-up time is at stake
        pass
    return ctx


def decoded(
    items: Iterator[Any],
    *,
    workers: int,
    window: int,
    exif_transpose: bool = False,
    fast: bool = False,
    max_pixels: int | None = None,
    stall_marks: bool = False,
) -> Iterator[Entry | None]:
    """``(item, pixels or None, error or None)`` for each input, in order (see the module docs).

    ``max_pixels``: images above it are errors (None: Pillow's limit, resolved here).
    With ``stall_marks``, :data:`STALL` (None) is also yielded whenever the
    next result is still being decoded, so that the consumer can use the wait.
    """
    limit = resolve_max_pixels(max_pixels)
    task = functools.partial(decode_task, exif_transpose=exif_transpose, fast=fast, max_pixels=limit)
    local = functools.partial(_decode_here, exif_transpose=exif_transpose, fast=fast, max_pixels=limit)

    def crashed(item: Any) -> tuple[None, str]:
        return None, f"{describe(item)}: the image decoder crashed on this file (its worker process died)"

    for entry in ordered_map(task, items, workers=workers, window=window, local=local, crashed=crashed,
                             in_worker=_goes_to_worker, stall_marks=stall_marks):
        yield entry if entry is STALL else (entry[0], *entry[1])


def ordered_map(
    task: Callable[[Any], Any],
    items: Iterator[Any],
    *,
    workers: int,
    window: int,
    local: Callable[[Any], Any],
    crashed: Callable[[Any], Any],
    in_worker: Callable[[Any], bool] = lambda item: True,
    stall_marks: bool = False,
) -> Iterator[tuple[Any, Any] | None]:
    """``(item, task(item))`` for each input, in input order, computed in worker processes.

    ``task`` (picklable, never raising) runs in a worker for the items
    ``in_worker`` accepts; ``local`` computes the same in this process (for the
    other items, few items, ``workers == 0``, or a ``__main__`` that workers
    cannot import). An item whose worker died twice gets ``crashed(item)``.
    At most ``window`` items are in flight. See the module docs for the rest.
    """
    head: list[Any] = []
    if workers > 0:
        for item in items:
            head.append(item)
            if len(head) >= MIN_ITEMS_FOR_POOL:
                break
    if workers == 0 or len(head) < MIN_ITEMS_FOR_POOL or not _main_importable() or main_reruns_caller():
        for source in (head, items):
            for item in source:
                yield item, local(item)
        return
    yield from _pooled(_chain(head, items), workers, max(window, workers), task, local, crashed, in_worker,
                       stall_marks)


def _main_importable() -> bool:
    """Whether new worker processes can re-import ``__main__`` (as forkserver and spawn do).

    A program read from standard input (``python -``) names a main file that
    does not exist; every worker would die on start. Such callers decode in
    this process instead: slower, but correct.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        return True  # python -m: workers import it by name
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)  # None: an interactive session, nothing to re-import


def main_reruns_caller() -> bool:
    """Whether worker processes would re-run the code that is calling this, from the top.

    ``spawn`` and ``forkserver`` start each worker by importing the main script
    (as ``__mp_main__``): its top-level code runs again, except what sits under
    ``if __name__ == "__main__":``. A script that hashes at top level, unguarded,
    would make every worker load the model and start a pool of its own, which
    multiprocessing refuses: pages of errors, and every image reported as a
    crash. Detected here from the call stack: the main module's top-level frame
    and whether its current line lies in a ``__name__ == "__main__"`` block.
    Unknown cases (no source, an interactive session) count as guarded.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__file__", None) is None:
        return False  # interactive, -c, or embedded: workers re-run nothing
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if name == "__main__" or name.endswith(".__main__"):
        return False  # `python -m package`: multiprocessing never re-runs a package's __main__
    outer = None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__":
            outer = frame
        frame = frame.f_back
    if outer is None:
        return False  # not called while the main script's top level runs (e.g. from a thread, a callback)
    guarded = _guarded_lines(outer.f_code.co_filename)
    if guarded is None:
        return False
    line = outer.f_lineno
    return not any(start <= line <= end for start, end in guarded)


@functools.lru_cache(maxsize=8)
def _guarded_lines(filename: str) -> tuple[tuple[int, int], ...] | None:
    """Line ranges of the ``if __name__ == "__main__":`` blocks of a script (None: unreadable)."""
    import ast

    try:
        with open(filename, "rb") as fh:
            tree = ast.parse(fh.read(), filename)
    except (OSError, SyntaxError, ValueError):
        return None

    def is_main_test(test: ast.expr, op: type) -> bool:
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], op)):
            return False
        sides = [test.left, test.comparators[0]]
        return (any(isinstance(x, ast.Name) and x.id == "__name__" for x in sides)
                and any(isinstance(x, ast.Constant) and x.value == "__main__" for x in sides))

    ranges = []
    stack = list(tree.body)
    while stack:  # module level only: function and class bodies do not run on import
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.If):
            block = node.body if is_main_test(node.test, ast.Eq) else node.orelse if is_main_test(node.test, ast.NotEq) \
                else None
            if block:
                ranges.append((block[0].lineno, max(n.end_lineno or n.lineno for n in block)))
                continue
        for field in ("body", "orelse", "finalbody", "handlers"):
            stack.extend(getattr(node, field, None) or [])
    return tuple(ranges)


def _chain(head: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
    yield from head
    yield from rest


#: Every pool _pooled made and has not shut down: what the exit hook below stops.
_LIVE_POOLS: "weakref.WeakSet[ProcessPoolExecutor]" = weakref.WeakSet()


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL the pool's worker processes. A broken pool must lose them: CPython's executor may
    have started one after it terminated the others (a submit racing the breakage), and that one
    then blocks for good writing its result to a pipe nobody reads, and the executor waits for it
    (seen as a test run that never exited). ``_processes`` is the executor's own table."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()


def _stop_pools_at_exit() -> None:
    for pool in list(_LIVE_POOLS):
        _kill_workers(pool)


# Runs before concurrent.futures' own exit hook, which joins every executor's threads (and so
# would wait for ever on a worker stuck as above); registered the way concurrent.futures does.
threading._register_atexit(_stop_pools_at_exit)


def _pooled(items: Iterator[Any], workers: int, window: int, task: Callable[[Any], Any],
            local: Callable[[Any], Any], crashed: Callable[[Any], Any], in_worker: Callable[[Any], bool],
            stall_marks: bool) -> Iterator[tuple[Any, Any] | None]:
    ctx = _context()

    def new_pool() -> ProcessPoolExecutor:
        made = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
        _LIVE_POOLS.add(made)
        return made

    def stop(broken: bool) -> None:
        if broken:
            _kill_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        _LIVE_POOLS.discard(pool)

    pool = new_pool()
    pending: deque[tuple[Any, Future | None]] = deque()
    retry: deque[Any] = deque()  # in-flight items of a broken pool, re-run one at a time
    exhausted = False
    crashes = 0

    def submit(item: Any) -> Future | None:
        if not in_worker(item):
            return None
        return pool.submit(task, item)

    def restart() -> ProcessPoolExecutor:
        stop(broken=True)
        return new_pool()

    try:
        while True:
            if retry:
                item = retry.popleft()
                future = submit(item)
                try:
                    result = future.result() if future is not None else local(item)
                    crashes = 0
                except BrokenProcessPool:
                    crashes += 1
                    if crashes >= MAX_CONSECUTIVE_CRASHES:
                        raise NeuralHashError(
                            f"worker processes died {crashes} times in a row; run in this process "
                            "instead (workers=0, or --workers 0). From a script, "
                            "also check that it runs under `if __name__ == \"__main__\":` (workers re-import it)"
                        ) from None
                    pool = restart()
                    result = crashed(item)
                except Exception as exc:
                    if not _failed_in_transport(future, exc):
                        raise
                    result = local(item)  # not picklable: run it here
                yield item, result
                continue
            while not exhausted and len(pending) < window:
                try:
                    item = next(items)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((item, submit(item)))
            if not pending:
                return
            if stall_marks and pending[0][1] is not None and not pending[0][1].done():
                yield STALL  # the consumer may run the network on what it holds while this decodes
            item, future = pending.popleft()
            if future is None:
                result = local(item)
            else:
                try:
                    result = future.result()
                except BrokenProcessPool:
                    retry.extend([item] + [it for it, _ in pending])
                    pending.clear()
                    pool = restart()
                    continue
                except Exception as exc:
                    if not _failed_in_transport(future, exc):
                        raise  # e.g. an exception raised by a signal handler while waiting
                    result = local(item)  # not picklable: run it here
            yield item, result
    finally:
        for _, future in pending:
            if future is not None:
                future.cancel()
        stop(broken=False)
