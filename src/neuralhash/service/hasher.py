"""Hashing uploaded images for the service: decoding in worker processes, the network in one thread.

Decoding runs :func:`neuralhash.hashing.pipeline.decode_task` (what ``neuralhash
hash`` runs) in a pool of worker processes, so a decoder that crashes or runs
out of memory kills a worker, not the server. When a worker dies, every upload
it was decoding sees a broken pool: the pool is replaced, and each of those
uploads is decoded once more, alone, in a one-process quarantine pool; the
one that kills that process too is the culprit and gets a 422, the others get
their hash.

The network runs in one thread; uploads whose pixels are ready while it is
busy go through it together as one batch (at most ``batch_size``), as
``neuralhash hash`` batches the files it reads.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageError, NeuralHashError
# The start method and worker set-up `neuralhash hash` uses (forkserver; Ctrl-C left to the parent).
from ..hashing.pipeline import _context, _worker_init, decode_task


class UploadError(NeuralHashError):
    """An upload that is not an image this service can hash (the message names the reason)."""


class ImageHasher:
    """``await hasher.hash(data, name)`` -> :class:`~neuralhash.hashing.Hash` (with margins)."""

    def __init__(self, nh: Any, *, workers: int, batch_size: int = 8) -> None:
        self.nh = nh
        self.workers = workers
        self.batch_size = batch_size
        self._ctx = _context() if workers > 0 else None
        self._pool: ProcessPoolExecutor | None = self._new_pool(workers) if workers > 0 else None
        self._quarantine: ProcessPoolExecutor | None = None
        self._quarantine_lock = asyncio.Lock()
        self._net = ThreadPoolExecutor(1, thread_name_prefix="nh-net")
        self._pending: list[tuple[np.ndarray, str, asyncio.Future]] = []
        self._running: asyncio.Task | None = None

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=self._ctx, initializer=_worker_init)

    def close(self) -> None:
        for pool in (self._pool, self._quarantine):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._net.shutdown(wait=True)

    def task(self, data: bytes) -> Any:
        """The picklable call a worker runs on an upload: (pixels, None) or (None, reason)."""
        return functools.partial(decode_task, data, exif_transpose=False, fast=False,
                                 max_pixels=Image.MAX_IMAGE_PIXELS)

    async def _decode(self, data: bytes, name: str) -> np.ndarray:
        task = self.task(data)
        loop = asyncio.get_running_loop()
        if self._pool is None:
            pixels, error = await loop.run_in_executor(self._net, task)
        else:
            pool = self._pool
            try:
                pixels, error = await loop.run_in_executor(pool, task)
            except BrokenProcessPool:
                if self._pool is pool:  # the first to notice replaces it
                    self._pool = self._new_pool(self.workers)
                    pool.shutdown(wait=False, cancel_futures=True)
                pixels, error = await self._decode_alone(task)
        if error is not None:
            raise UploadError(error.replace("<bytes>", name, 1))
        return pixels

    async def _decode_alone(self, task: Any) -> tuple[Any, Any]:
        """Decode in the one-process quarantine pool, one upload at a time (see the module docs)."""
        loop = asyncio.get_running_loop()
        async with self._quarantine_lock:
            if self._quarantine is None:
                self._quarantine = self._new_pool(1)
            try:
                return await loop.run_in_executor(self._quarantine, task)
            except BrokenProcessPool:
                self._quarantine.shutdown(wait=False, cancel_futures=True)
                self._quarantine = None
                return None, "<bytes>: the image decoder crashed on this upload (its worker process died)"

    async def hash(self, data: bytes, name: str = "upload") -> Any:
        if not data:
            raise UploadError(f"{name}: empty upload (0 bytes)")
        pixels = await self._decode(data, name)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((pixels, name, future))
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._run_network())
        return await future

    async def _run_network(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size:]
            try:
                # Per image: a non-finite output fails its own upload (named), not its batch-mates.
                hashes = await loop.run_in_executor(self._net, self.nh.hash_pixels_each, [p for p, _, _ in batch])
            except Exception as exc:
                error = exc if isinstance(exc, NeuralHashError) else NeuralHashError(
                    f"the network failed on a batch of {len(batch)} ({type(exc).__name__}: {exc})")
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, name, future), h in zip(batch, hashes):
                if future.done():
                    continue
                if isinstance(h, str):
                    future.set_exception(ImageError(f"{name}: {h}"))
                else:
                    future.set_result(h)

