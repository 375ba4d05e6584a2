"""Hashing corpora on a Dask cluster: :func:`hash_paths` (a Dask DataFrame) and :func:`iter_batches` (streamed).

    from distributed import Client
    from neuralhash.hashing.distributed import hash_paths, to_parquet

    client = Client("tcp://scheduler:8786")         # or Client(LocalCluster()) on one machine
    df = hash_paths("s3://bucket/images/**/*.jpg", model="~/nh")   # path, path_bytes, hash, margins, error
    to_parquet(df, "s3://bucket/hashes/")          # written partition by partition, by the workers
    frame = df.compute()                           # or all of it here, in input order

Needs the optional extra (``pip install '.[dask]'``); importing this
module does not import Dask. How a run goes:

- The client expands the input into a list of path strings and holds it
  (about 100 bytes a path: 1.4 million paths take some 150 MB).
- The model is prepared once, here: an Espresso model is converted once
  (through NeuralHash's cache) and its ONNX bytes and seed matrix become one
  task of the graph, ``neuralhash-model-<model_id>``, that every hashing task
  depends on. A worker fetches it once and builds its NeuralHash once (a
  module-level cache keyed by ``model_id``); no task re-reads a model file. The
  scheduler keeps the bytes, so the key is recomputed if every worker holding
  it dies (a scattered value would be lost instead).
- A task hashes ``paths_per_task`` paths into a pandas DataFrame with the
  columns of :data:`COLUMNS`, indexed by the paths' positions in the input.
  Decoding runs in the task's thread: Dask's worker threads and processes are
  the parallelism, so ONNX Runtime uses ``$OMP_NUM_THREADS`` threads per run
  (Dask's nanny sets it to 1 on workers, as it does for NumPy's BLAS), not one
  per core for each of the worker's threads.
- Local paths are decoded by path on the worker (they must be reachable at the
  same path there: shared storage), so hashes and error messages are those of
  :meth:`NeuralHash.hash_many`. URLs (``scheme://...``) are read with fsspec on
  the worker (``s3://`` needs s3fs installed there, ``gs://`` gcsfs, ...).
- An unreadable image is a row with ``error`` set. A worker that dies makes
  Dask rerun its tasks elsewhere: every path still appears once. A task that
  kills every worker it runs on fails after ``distributed.scheduler.allowed-failures``
  retries (3 by default; never a hang); :func:`iter_batches` then reruns its
  paths one per task and reports the guilty path as an error row.
"""

from __future__ import annotations

import ctypes
import glob
import itertools
import os
import re
import sys
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np

from ..errors import NeuralHashError, install_hint
from .hash import Hash, HashResult
from ..files.pathnames import from_bytes, is_utf8, to_bytes
from .seed import HASH_BITS

if TYPE_CHECKING:  # only for annotations: importing this module must not import Dask
    import dask.dataframe
    import pandas
    from distributed import Client, Future

    from .model import NeuralHash

#: The columns of every result frame: path (str), path_bytes (the name's exact
#: bytes when it is not valid UTF-8, else null), hash (24 hex digits, null on
#: error), margins (96 float32 ``|v|``, null on error), error (null on success).
#: File names follow :mod:`neuralhash.files.pathnames`' JSON rule with bytes for base64:
#: ``path`` is the name when it is UTF-8, else a readable form (undecodable bytes
#: as U+FFFD) beside ``path_bytes``; a reader takes ``path_bytes`` when it is set.
COLUMNS = ("path", "path_bytes", "hash", "margins", "error")

#: Paths per task unless told otherwise (fewer for small inputs, so that every worker gets some).
MAX_PATHS_PER_TASK = 64

DASK_EXTRA_MESSAGE = f"hashing on a Dask cluster needs the optional extra: {install_hint('dask')}"

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_GLOB_MAGIC = re.compile(r"[*?\[]")


def require_dask() -> None:
    """Raise :class:`NeuralHashError` with the install command when Dask's pieces are missing."""
    import importlib

    try:
        for name in ("dask.dataframe", "distributed", "fsspec", "pyarrow"):
            importlib.import_module(name)
    except ImportError as exc:
        raise NeuralHashError(f"{DASK_EXTRA_MESSAGE} ({exc})") from None


def is_url(path: str) -> bool:
    """True for ``scheme://...`` (read with fsspec), False for a local path."""
    return bool(_URL.match(path))


# -- the client side ------------------------------------------------------------------------


def expand_paths(paths_or_glob: str | os.PathLike | Iterable[str | os.PathLike],
                 storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The paths to hash, as strings, in order.

    A list (any iterable) is taken as it is. One string is a glob when it holds
    ``*``, ``?`` or ``[`` (local: Python's ``glob`` with ``**``; a URL: fsspec's;
    files only, sorted), a local directory (walked for image files as
    ``neuralhash hash`` walks it), else one file or URL. A glob matching no
    file is an error.
    """
    if isinstance(paths_or_glob, (bytes, bytearray)):
        raise NeuralHashError("hash_paths takes paths, a glob or a folder, not image bytes")
    if not isinstance(paths_or_glob, (str, os.PathLike)):
        paths = []
        for p in paths_or_glob:
            if not isinstance(p, (str, os.PathLike)):
                raise NeuralHashError(f"hash_paths takes paths or URLs, got {type(p).__name__} {p!r:.60}")
            paths.append(os.fsdecode(p))
        return paths
    spec = os.fsdecode(paths_or_glob)
    local = not is_url(spec)
    if _GLOB_MAGIC.search(spec) and not (local and os.path.exists(spec)):  # a file named "a[1].jpg" is a file
        found = _glob(spec, storage_options)
        if not found:
            raise NeuralHashError(f"{spec}: no file matches this pattern")
        return found
    if local and os.path.isdir(spec):
        from . import IMAGE_EXTENSIONS
        from ..files.walk import walk_images

        return list(walk_images(spec, IMAGE_EXTENSIONS, _unreadable_folder))
    return [spec]


def _unreadable_folder(path: str, reason: str) -> None:
    """For the library an unreadable folder is an error, not a printed line."""
    raise NeuralHashError(f"{path}: {reason}")


def _glob(pattern: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    if not is_url(pattern):
        return sorted(p for p in glob.glob(pattern, recursive=True) if not os.path.isdir(p))
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(pattern, **(storage_options or {}))
        found = fs.glob(path, detail=True)
    except ImportError as exc:  # e.g. s3fs not installed
        raise NeuralHashError(f"{pattern}: cannot read this kind of URL ({exc})") from None
    except Exception as exc:
        raise NeuralHashError(f"{pattern}: cannot list ({type(exc).__name__}: {exc})") from None
    return sorted(fs.unstrip_protocol(p) for p, info in found.items() if info.get("type") != "directory")


def current_client(client: "Client | None" = None) -> "Client":
    """``client``, else the default client of this process; without one, an error saying how to make one."""
    require_dask()
    if client is not None:
        return client
    from distributed import get_client

    try:
        return get_client()
    except ValueError:
        raise NeuralHashError(
            "no Dask client: connect one first, e.g. `from distributed import Client; "
            "client = Client('tcp://SCHEDULER:8786')` (or `Client(LocalCluster())` on this machine), "
            "or pass client="
        ) from None


def share_model(client: "Client", model: Any = None, *, seed: Any = None,
                providers: list[str] | None = None) -> "Future":
    """The model as one graph key of ``client`` (a future every hashing task takes as input).

    ``model``: a :class:`NeuralHash`, or what :meth:`NeuralHash.from_source`
    accepts (None: Apple's model on this machine). It is loaded here once
    (converted once, if Espresso) and its ONNX bytes and seed sent once.
    """
    from .model import NeuralHash, model_id_of

    nh = model if isinstance(model, NeuralHash) else NeuralHash.from_source(model, seed=seed, providers=providers)
    if nh.onnx_path is None:
        raise NeuralHashError("this NeuralHash runs from memory only (its ONNX file could not be cached); "
                              "pass the model as an .onnx file, or make the cache folder writable")
    try:
        data = nh.onnx_path.read_bytes()
    except OSError as exc:
        raise NeuralHashError(f"{nh.onnx_path}: cannot read ({exc.strerror or exc})") from None
    payload = {
        "model_id": nh.model_id,
        "onnx": data,
        "seed": np.array(nh.seed),
        "providers": list(providers) if providers else nh.providers,
        "description": f"{nh.description.rsplit('; ', 1)[0]}, on a Dask worker",
        "is_synthetic": nh.is_synthetic,
    }
    if model_id_of(data, payload["seed"]) != nh.model_id:
        raise NeuralHashError(f"{nh.onnx_path}: the file changed after the model was loaded")
    import dask

    # pure=True with a fixed key: a second run with the same model reuses the key. The
    # bytes are meant to be in the graph, once: no "large graph" warning for them.
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": f"{2 * len(data) + (10 << 20)}B"}):
        return client.submit(_identity, payload, key=f"neuralhash-model-{nh.model_id}", pure=True)


def _identity(x: Any) -> Any:
    return x


def _paths_per_task(n: int, threads: int, paths_per_task: int | None) -> int:
    if paths_per_task is not None:
        if not isinstance(paths_per_task, int) or paths_per_task < 1:
            raise NeuralHashError(f"paths_per_task must be a positive integer, got {paths_per_task!r}")
        return paths_per_task
    # A few tasks per worker thread for small inputs (every worker gets work), at most
    # MAX_PATHS_PER_TASK: Dask's ~ms per task is then well under 1% of the hashing time.
    return max(1, min(MAX_PATHS_PER_TASK, -(-n // (4 * threads))))


@dataclass(frozen=True)
class _Plan:
    """What hash_paths and iter_batches share: the client, the paths, the model's key, the task size."""

    client: "Client"
    paths: list[str]
    model_ref: "Future | None"  # None when there is nothing to hash
    threads: int                # worker threads in the cluster
    step: int                   # paths per task
    options: dict[str, Any]     # _hash_task's keyword arguments


def _plan(paths_or_glob, model, client, seed, providers, batch_size, paths_per_task, exif_transpose, fast,
          storage_options, max_pixels=None) -> _Plan:
    from .image import resolve_max_pixels

    _check_batch_size(batch_size)
    client = current_client(client)
    paths = expand_paths(paths_or_glob, storage_options)
    # Resolved here: a worker process has Pillow's default limit, not this process's.
    options = dict(batch_size=batch_size, exif_transpose=exif_transpose, fast=fast,
                   storage_options=dict(storage_options or {}), cwd=os.getcwd(),
                   max_pixels=resolve_max_pixels(max_pixels))
    if not paths:
        return _Plan(client, paths, None, 1, 1, options)
    model_ref = share_model(client, model, seed=seed, providers=providers)
    threads = max(1, sum(client.nthreads().values()))
    return _Plan(client, paths, model_ref, threads, _paths_per_task(len(paths), threads, paths_per_task), options)


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise NeuralHashError(f"batch_size must be a positive integer, got {batch_size!r}")


def hash_paths(
    paths_or_glob: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    model: Any = None,
    client: "Client | None" = None,
    seed: Any = None,
    providers: list[str] | None = None,
    batch_size: int = 4,
    paths_per_task: int | None = None,
    exif_transpose: bool = False,
    fast: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    max_pixels: int | None = None,
) -> "dask.dataframe.DataFrame":
    """Hash images on a Dask cluster: a lazy Dask DataFrame, one row per path, in input order.

    ``paths_or_glob``: see :func:`expand_paths`. ``model``: a NeuralHash or
    what :meth:`NeuralHash.from_source` accepts (``seed`` and ``providers``
    then apply). ``client``: None takes the current default client (an error
    if there is none: this never starts a cluster behind your back).
    ``batch_size``: images per network run on a worker; ``paths_per_task``:
    paths per Dask task and per partition (None: up to :data:`MAX_PATHS_PER_TASK`,
    fewer when the input is small). ``storage_options`` go to fsspec for URLs.
    ``max_pixels``: images larger than this are refused before decoding (None:
    this process's ``PIL.Image.MAX_IMAGE_PIXELS``), as in ``NeuralHash.hash_many``.

    Columns: :data:`COLUMNS` (``margins`` a pyarrow ``list<float32>``,
    ``path_bytes`` a pyarrow ``binary``, set for names that are not UTF-8). The
    index is the position in the input (known divisions), so ``.compute()``
    returns the input order. The hashes, margins and error messages equal
    ``NeuralHash.hash_many``'s. The graph holds a future of ``client``: compute
    it with that client (the default one, ``client.compute(df)``, or within
    ``with client.as_current():``). Write Parquet with :func:`to_parquet`
    (``df.to_parquet`` works too, but ``pandas.read_parquet`` then needs
    ``dtype_backend="pyarrow"`` to read the list column back).
    """
    require_dask()
    import dask.dataframe as dd

    plan = _plan(paths_or_glob, model, client, seed, providers, batch_size, paths_per_task, exif_transpose,
                 fast, storage_options, max_pixels)
    meta = _frame(0, [], [], np.empty((0, HASH_BITS), np.float32), [])
    if not plan.paths:
        return dd.from_pandas(meta, npartitions=1)
    paths, step = plan.paths, plan.step
    starts = list(range(0, len(paths), step))
    return dd.from_map(
        _hash_task, starts, [paths[s:s + step] for s in starts], args=[plan.model_ref],
        meta=meta, divisions=(*starts, len(paths) - 1), label="neuralhash", enforce_metadata=False,
        **plan.options,
    )


def iter_batches(
    paths_or_glob: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    model: Any = None,
    client: "Client | None" = None,
    seed: Any = None,
    providers: list[str] | None = None,
    batch_size: int = 4,
    paths_per_task: int | None = None,
    exif_transpose: bool = False,
    fast: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    window: int | None = None,
    max_pixels: int | None = None,
) -> Iterator["pandas.DataFrame"]:
    """Like :func:`hash_paths`, but yields the pandas frame of each task as soon as it is its turn.

    Frames come in input order. At most ``window`` tasks (None: 4 per
    thread of the cluster, plus 4) are submitted and not yet yielded, so
    neither the client nor the cluster holds more than that many results,
    whatever the number of paths. A task whose workers kept dying is rerun
    one path per task; the path that still kills workers becomes an error
    row. Closing the iterator cancels the tasks in flight.
    """
    require_dask()
    plan = _plan(paths_or_glob, model, client, seed, providers, batch_size, paths_per_task, exif_transpose,
                 fast, storage_options, max_pixels)
    if not plan.paths:
        return (frame for frame in ())  # a generator all the same (it has close())
    if window is None:  # 2 per thread left workers idle between tasks (measured: 25% slower)
        window = 4 * plan.threads + 4
    return _stream(plan.client, plan.model_ref, plan.paths, plan.step, window, plan.options)


def _stream(client: "Client", model_ref: "Future", paths: list[str], step: int, window: int,
            options: dict[str, Any]) -> Iterator["pandas.DataFrame"]:
    from distributed import KilledWorker

    run = uuid.uuid4().hex[:12]
    counter = itertools.count()

    def submit(start: int, chunk: list[str]):
        key = f"neuralhash-{run}-{next(counter)}"
        # The head of the queue first: Dask does not otherwise keep the order of
        # separate submits, and a late head holds every later result back (measured:
        # the first of 16 tasks came back with the ninth).
        return start, chunk, client.submit(_hash_task, start, chunk, model_ref, key=key, pure=False,
                                           priority=-start, **options)

    todo = iter(range(0, len(paths), step))
    pending: deque = deque()
    try:
        while True:
            while len(pending) < window:
                start = next(todo, None)
                if start is None:
                    break
                pending.append(submit(start, paths[start:start + step]))
            if not pending:
                return
            start, chunk, future = pending.popleft()
            try:
                frame = future.result()
            except KilledWorker:
                if len(chunk) > 1:  # find the path that kills workers: one task per path, in order
                    pending.extendleft(reversed([submit(start + i, [p]) for i, p in enumerate(chunk)]))
                    continue
                reason = "the Dask worker hashing this image died on every attempt (a crash in a decoder?)"
                frame = _frame(start, chunk, [None], np.zeros((1, HASH_BITS), np.float32),
                               [f"{chunk[0]}: {reason}"])
            except NeuralHashError:
                raise
            except Exception as exc:  # a worker without neuralhash, a lost connection...
                raise NeuralHashError(f"a hashing task failed on the Dask cluster "
                                      f"({type(exc).__name__}: {exc})") from None
            finally:
                future.release()
            yield frame
    finally:
        for _, _, future in pending:
            future.cancel()


def arrow_schema():
    """The Parquet schema of results: plain Arrow types, no pandas metadata, so that
    ``pandas.read_parquet`` and ``dask.dataframe.read_parquet`` read the files back
    (margins as arrays of float32). The pandas metadata of a list column is what they
    cannot read back, which is why :func:`to_parquet` exists beside ``df.to_parquet``."""
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("path_bytes", pa.binary()), ("hash", pa.string()),
                      ("margins", pa.list_(pa.float32())), ("error", pa.string())])


def to_table(frame: "pandas.DataFrame"):
    """A result frame as a ``pyarrow.Table`` of :func:`arrow_schema` (the index, the position, dropped)."""
    import pyarrow as pa

    return pa.Table.from_pandas(frame, schema=arrow_schema(), preserve_index=False).replace_schema_metadata(None)


def to_parquet(df: "dask.dataframe.DataFrame", path: str | os.PathLike, *, client: "Client | None" = None,
               storage_options: Mapping[str, Any] | None = None) -> int:
    """Write the results of :func:`hash_paths` as ``part.NNNNN.parquet`` files in folder ``path``; the row count.

    One file per partition, written by the workers as they finish (nothing is
    gathered here: memory stays flat), so ``path`` is a URL or a folder the
    workers reach (for a LocalCluster, any local folder). Files in name order,
    rows in file order, are the input order. A folder already holding Parquet
    files is refused, so that two runs never mix.
    """
    require_dask()
    import dask
    from fsspec.core import url_to_fs

    client = current_client(client)
    url = os.fsdecode(path)
    try:
        fs, root = url_to_fs(url, **(storage_options or {}))
        fs.makedirs(root, exist_ok=True)
        existing = fs.glob(f"{root.rstrip('/')}/*.parquet")
    except Exception as exc:
        raise NeuralHashError(f"{url}: cannot create or list the folder ({type(exc).__name__}: {exc})") from None
    if existing:
        raise NeuralHashError(f"{url}: already holds Parquet files; remove them or choose another folder")
    parts = df.to_delayed()
    width = max(5, len(str(len(parts) - 1)))
    writes = [dask.delayed(_write_part)(part, f"{url.rstrip('/')}/part.{i:0{width}d}.parquet",
                                        dict(storage_options or {})) for i, part in enumerate(parts)]
    return int(sum(client.gather(client.compute(writes))))


def _write_part(frame: "pandas.DataFrame", url: str, storage_options: Mapping[str, Any]) -> int:
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(url, "wb", **storage_options) as fh:
        pq.write_table(to_table(frame), fh)
    return len(frame)


def to_results(frame: "pandas.DataFrame") -> Iterator[HashResult]:
    """The rows of a result frame as :class:`HashResult` (with the projected values rebuilt from the margins).

    Bit ``i`` is 1 exactly when ``v[i] >= 0``, so ``v = ±margin`` by the bit:
    margins and unstable bits are those of single-process hashing, exactly.
    A name that is not UTF-8 comes back as its exact bytes (``path_bytes``),
    surrogate-escaped like :func:`os.fsdecode`, and so does an error's leading ``PATH: ``.
    """
    for shown, raw, hex_, margins, error in zip(frame["path"], frame["path_bytes"], frame["hash"],
                                                frame["margins"], frame["error"]):
        path = from_bytes(bytes(raw)) if isinstance(raw, (bytes, bytearray, memoryview)) else shown
        if isinstance(hex_, str):
            bits = Hash.from_hex(hex_).bits
            m = np.asarray(margins, dtype=np.float32)
            yield HashResult(path, Hash(bits, np.where(bits == 1, m, -m)), None)
        else:
            if path != shown and isinstance(error, str) and error.startswith(f"{shown}: "):
                error = f"{path}{error[len(shown):]}"
            yield HashResult(path, None, error)


# -- the worker side --------------------------------------------------------------------------

#: model_id -> NeuralHash, built once per worker process and kept for later tasks.
_MODELS: dict[str, "NeuralHash"] = {}
_MODELS_LOCK = threading.Lock()
_MAX_MODELS = 2  # a long-lived worker used with many models keeps only the latest
_BUILDS = 0  # how many models this process has built (the tests check it is one per worker)


def _worker_model(payload: Mapping[str, Any]) -> "NeuralHash":
    global _BUILDS
    model_id = payload["model_id"]
    nh = _MODELS.get(model_id)
    if nh is not None:
        return nh
    with _MODELS_LOCK:  # a worker's threads start tasks together: build once
        nh = _MODELS.get(model_id)
        if nh is None:
            nh = _build_model(payload)
            while len(_MODELS) >= _MAX_MODELS:
                _MODELS.pop(next(iter(_MODELS)))
            _MODELS[model_id] = nh
            _BUILDS += 1
    return nh


def _build_model(payload: Mapping[str, Any]) -> "NeuralHash":
    from .model import NeuralHash

    # ONNX Runtime's default is one thread per core for every run, and a worker runs
    # several tasks at once: with OMP_NUM_THREADS (1 under Dask's nanny) the worker's
    # threads, not ORT's, use the cores (the numbers do not depend on the thread count).
    nh = NeuralHash(None, onnx_bytes=payload["onnx"], seed=payload["seed"], providers=payload["providers"],
                    description=payload["description"], is_synthetic=payload["is_synthetic"],
                    threads=_ort_threads())
    if nh.model_id != payload["model_id"]:
        raise NeuralHashError("the model changed on its way to the Dask worker (model_id differs)")
    _tune_malloc()
    return nh


def _tune_malloc() -> None:
    """Undo the slowdown Dask's nanny causes by setting ``MALLOC_TRIM_THRESHOLD_``.

    Setting it also pins glibc's mmap threshold at 128 KiB (the dynamic one is
    turned off), so every image-sized array becomes a fresh mmap, zero-filled
    page by page and unmapped when freed: measured, hashing runs 40% slower.
    The threshold is raised to 4 MiB (where glibc's own dynamic one would
    settle for these arrays); the trim threshold, Dask's memory intent, stays.
    """
    if not sys.platform.startswith("linux") or "MALLOC_TRIM_THRESHOLD_" not in os.environ \
            or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        ctypes.CDLL(None).mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to undo
        pass


def _ort_threads() -> int:
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


def _hash_task(start: int, paths: list[str], model: Mapping[str, Any], *, batch_size: int,
               exif_transpose: bool, fast: bool, storage_options: Mapping[str, Any],
               cwd: str = "", max_pixels: int | None = None) -> "pandas.DataFrame":
    """One task: ``paths`` hashed on a worker, as a result frame indexed from ``start``.

    Relative local paths are read from the client's working directory ``cwd``
    (a worker's own is anywhere), and reported as given.
    """
    nh = _worker_model(model)
    hexes: list[str | None] = [None] * len(paths)
    margins = np.zeros((len(paths), HASH_BITS), np.float32)
    errors: list[str | None] = [None] * len(paths)
    # batch_size paths at a time: remote files are read a group at a time (concurrently
    # on async filesystems) and never more than a group's bytes are held.
    for lo in range(0, len(paths), batch_size):
        group = range(lo, min(lo + batch_size, len(paths)))
        items: dict[int, Any] = {i: os.path.join(cwd, paths[i]) for i in group}
        remote = [i for i in group if is_url(paths[i])]
        if remote:
            for i, data in zip(remote, _fetch([paths[i] for i in remote], storage_options)):
                if isinstance(data, bytes):
                    items[i] = data
                else:
                    errors[i] = data
                    del items[i]
        order = list(items)
        results = nh.hash_many([items[i] for i in order], batch_size=batch_size, workers=0,
                               exif_transpose=exif_transpose, fast=fast, max_pixels=max_pixels)
        for i, result in zip(order, results):
            if result.ok:
                hexes[i] = result.hash.hex
                margins[i] = result.hash.margins
            else:
                errors[i] = _named(result.error, result.path, paths[i])
    return _frame(start, paths, hexes, margins, errors)


def _named(error: str | None, placeholder: str, path: str) -> str:
    """An error about ``<bytes>`` (a URL's content) as one about the URL."""
    error = error or "failed"
    if placeholder != path and error.startswith(f"{placeholder}: "):
        return f"{path}: {error[len(placeholder) + 2:]}"
    return error


def _fetch(urls: list[str], storage_options: Mapping[str, Any]) -> list[bytes | str]:
    """Each URL's bytes, or the error message naming it."""
    from fsspec.core import url_to_fs

    out: list[bytes | str] = [""] * len(urls)
    groups: dict[int, tuple[Any, list[tuple[int, str]]]] = {}
    for i, url in enumerate(urls):
        try:
            fs, path = url_to_fs(url, **storage_options)  # file systems are cached: one per protocol
        except ImportError as exc:
            out[i] = f"{url}: cannot read this kind of URL ({exc})"
            continue
        except Exception as exc:
            out[i] = f"{url}: cannot read ({type(exc).__name__}: {exc})"
            continue
        groups.setdefault(id(fs), (fs, []))[1].append((i, path))
    for fs, members in groups.values():
        try:
            found = fs.cat([path for _, path in members], on_error="return")
        except Exception as exc:
            found = {path: exc for _, path in members}
        for i, path in members:
            data = found.get(path, FileNotFoundError(path))
            if isinstance(data, bytes):
                out[i] = data
            elif isinstance(data, FileNotFoundError):
                out[i] = f"{urls[i]}: no such file"
            elif isinstance(data, IsADirectoryError):
                out[i] = f"{urls[i]}: is a directory, not an image file"
            else:
                out[i] = f"{urls[i]}: cannot read ({type(data).__name__}: {data})"
    return out


def _utf8(text: str | None) -> str | None:
    """``text`` storable as an Arrow string: a file name's undecodable bytes (lone surrogates) as U+FFFD."""
    if text is None or is_utf8(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _frame(start: int, paths: list[str], hexes: list[str | None], margins: np.ndarray,
           errors: list[str | None]) -> "pandas.DataFrame":
    """The result frame (the same dtypes for every task and for the meta).

    Arrow strings are UTF-8: a name that is not (os.fsdecode's lone surrogates,
    which pyarrow refuses) is carried by ``path_bytes``, and ``path`` shows it.
    """
    import pandas as pd
    import pyarrow as pa

    ok = np.array([h is not None for h in hexes], dtype=bool)
    # A list<float32> column: 96 values for each hashed row, null for a failed one.
    offsets = np.concatenate([[0], np.cumsum(ok * HASH_BITS)]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(margins[ok].reshape(-1), pa.float32()),
                                     mask=pa.array(~ok))
    string = pd.StringDtype("pyarrow")
    exact = [None if is_utf8(p) else to_bytes(p) for p in paths]
    return pd.DataFrame(
        {
            "path": pd.array([_utf8(p) for p in paths], dtype=string),
            "path_bytes": pd.arrays.ArrowExtensionArray(pa.array(exact, pa.binary())),
            "hash": pd.array(hexes, dtype=string),
            "margins": pd.arrays.ArrowExtensionArray(lists),
            "error": pd.array([_utf8(e) for e in errors], dtype=string),
        },
        index=pd.RangeIndex(start, start + len(paths)),
    )


__all__ = [
    "COLUMNS",
    "DASK_EXTRA_MESSAGE",
    "MAX_PATHS_PER_TASK",
    "current_client",
    "expand_paths",
    "hash_paths",
    "is_url",
    "iter_batches",
    "arrow_schema",
    "require_dask",
    "share_model",
    "to_parquet",
    "to_results",
    "to_table",
]
