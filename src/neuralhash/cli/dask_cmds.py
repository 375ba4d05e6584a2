"""``neuralhash hash --scheduler ADDRESS``: the hash command on a Dask cluster.

The output is the plain command's, byte for byte (the same Writer, Failures
and Progress, results in input order); only where the hashing runs differs.
The paths are expanded here first (directories walked, ``-`` read whole from
standard input) and held as a list of strings; results stream back a few
tasks at a time (:func:`neuralhash.hashing.distributed.iter_batches`), so memory stays
flat however many images there are. ``--parquet DIR`` is written here, from
the streamed results, so DIR need not be reachable by the workers.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections import deque
from pathlib import Path
from typing import Iterator

from ..errors import NeuralHashError
from .common import load_hasher
from .output import (Failures, Progress, Writer, emit, hash_output, pass_file_names_through, sigterm_unwinds,
                     write_unlisted)
from .paths import iter_paths

#: Seconds to wait for a scheduler before giving up (an unreachable address must not hang).
CONNECT_TIMEOUT = 5


def cmd_hash_on_cluster(args: argparse.Namespace) -> int:
    from ..hashing import distributed as nhd
    from ..hashing import IMAGE_EXTENSIONS

    nhd.require_dask()  # before anything else: the fix is an install
    if args.scheduler != "local":
        probe(args.scheduler)  # fail fast, before a model is converted
    nh = load_hasher(args)
    pass_file_names_through()
    progress, failures, writer = hash_output(args)
    sink = ParquetSink(Path(args.parquet)) if args.parquet else None
    if sink is not None and failures.records is None:
        failures.records = deque()  # Parquet lists every failure, whatever the output format
    paths = list(_expand_url_globs(iter_paths(args.paths, IMAGE_EXTENSIONS, failures, null=args.null)))
    if sink is not None and failures.records:
        sink.write(_failed_frame(list(failures.records)))
    write_unlisted(writer, failures)  # folders that could not be listed, before the first result
    if paths:  # nothing to hash: no cluster to start
        with sigterm_unwinds(), connect(args.scheduler, args.workers) as client:
            _hash_on(client, nh, paths, args, writer, failures, progress, sink)
    if sink is not None:
        sink.close()
    if progress.done == 0 and failures.count == 0:
        print("neuralhash: warning: no images found", file=sys.stderr, flush=True)
    return 1 if failures.count else 0


def _hash_on(client, nh, paths: list[str], args: argparse.Namespace, writer: Writer, failures: Failures,
             progress: Progress, sink: "ParquetSink | None") -> None:
    from ..hashing import distributed as nhd

    batches = nhd.iter_batches(paths, model=nh, client=client, batch_size=args.batch_size,
                               paths_per_task=args.paths_per_task,
                               exif_transpose=args.exif_transpose, fast=args.fast,
                               max_pixels=getattr(args, "max_pixels", None))
    try:
        for frame in batches:
            if sink is not None:
                sink.write(frame)
            emit(nhd.to_results(frame), writer, failures, progress)
    finally:
        batches.close()  # cancel the tasks in flight when the loop ends early (Ctrl-C, SIGTERM, closed pipe)
        progress.clear()


def _failed_frame(results: list) -> "pandas.DataFrame":
    """Error results (folders that could not be listed) as rows of a result frame, for the Parquet files."""
    import numpy as np

    from ..hashing import distributed as nhd
    from ..hashing.seed import HASH_BITS

    return nhd._frame(0, [r.path for r in results], [None] * len(results),
                      np.zeros((len(results), HASH_BITS), np.float32), [r.error for r in results])


def _expand_url_globs(paths: Iterator[str]) -> Iterator[str]:
    """A URL holding ``*``, ``?`` or ``[`` is a glob (no shell expands it); local paths are as named."""
    from ..hashing.distributed import expand_paths, is_url

    for path in paths:
        if is_url(path) and any(c in path for c in "*?["):
            yield from expand_paths(path)
        else:
            yield path


@contextlib.contextmanager
def connect(address: str, workers: int | None) -> Iterator:
    """A ``distributed.Client`` for ``address``; ``local``: a LocalCluster of ``workers`` processes.

    The LocalCluster has one thread per worker process (each runs one image at
    a time) and ``workers`` processes (default one per CPU), no dashboard, and
    logs only errors. Both are closed on the way out.
    """
    from distributed import Client, LocalCluster

    cluster = None
    if address == "local":
        n = max(1, workers) if workers is not None else (os.cpu_count() or 1)
        try:
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   silence_logs=logging.ERROR)
            client = Client(cluster, set_as_default=False)
        except Exception as exc:
            if cluster is not None:
                cluster.close()
            raise NeuralHashError(f"cannot start a local Dask cluster ({type(exc).__name__}: {exc})") from None
    else:
        # The caller probes first (see probe): a Client that fails to connect hangs for
        # twice its time-out in its destructor, and a non-Dask port sends it garbage.
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except Exception as exc:
            raise NeuralHashError(f"cannot connect to the Dask scheduler at {address} ({exc})") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def probe(address: str, timeout: float | None = None) -> None:
    """Raise :class:`NeuralHashError` naming ``address`` unless a Dask scheduler answers there within ``timeout``."""
    import asyncio

    from distributed.comm import connect as comm_connect

    timeout = CONNECT_TIMEOUT if timeout is None else timeout

    async def identity() -> object:
        comm = await comm_connect(address, timeout=timeout)
        try:
            await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), timeout)
            return await asyncio.wait_for(comm.read(), timeout)
        finally:
            comm.abort()

    try:
        answer = asyncio.run(identity())
    except ValueError as exc:  # a malformed address
        raise NeuralHashError(f"--scheduler {address!r}: {exc}") from None
    except (OSError, asyncio.TimeoutError) as exc:
        raise NeuralHashError(f"cannot reach the Dask scheduler at {address} within {timeout:g} s "
                              f"({exc})") from None
    except Exception:
        answer = None
    if not isinstance(answer, dict) or answer.get("type") != "Scheduler":
        raise NeuralHashError(f"{address} does not answer as a Dask scheduler (is it the scheduler's port, "
                              "usually 8786?)")


class ParquetSink:
    """Result frames written as ``DIR/part.NNNNN.parquet``, ``ROWS_PER_FILE`` rows each, in input order.

    Each file is written under a temporary name and renamed when complete; a
    folder that already holds Parquet files is refused so that runs never mix.
    Memory: at most one file's rows (a few tens of MB).
    """

    ROWS_PER_FILE = 65536

    def __init__(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            existing = any(folder.glob("*.parquet"))
        except OSError as exc:
            raise NeuralHashError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None
        if existing:
            raise NeuralHashError(f"{folder}: already holds Parquet files; remove them or choose another folder")
        self.folder = folder
        self.frames: list = []
        self.rows = 0
        self.files = 0

    def write(self, frame) -> None:
        self.frames.append(frame)
        self.rows += len(frame)
        if self.rows >= self.ROWS_PER_FILE:
            self._flush()

    def close(self) -> None:
        if self.frames or self.files == 0:  # an empty run still leaves one (empty) file with the schema
            self._flush()

    def _flush(self) -> None:
        import pandas as pd
        import pyarrow.parquet as pq

        from ..hashing.distributed import arrow_schema, to_table

        frames, self.frames, self.rows = self.frames, [], 0
        table = to_table(pd.concat(frames)) if frames else arrow_schema().empty_table()
        path = self.folder / f"part.{self.files:05d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise NeuralHashError(f"{path}: cannot write ({exc.strerror or exc})") from None
        self.files += 1
