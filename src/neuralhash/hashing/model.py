"""NeuralHash: images in, 96-bit hashes out, bit for bit as the community reference computes them.

Per image: :func:`~neuralhash.hashing.image.decode` (Pillow ``convert("RGB")``
and ``resize((360, 360))``), :func:`~neuralhash.hashing.image.to_input`
(``float32 / 255 * 2 - 1``, NCHW), ONNX Runtime for the network's first output
(``leaf/logits``, 128 floats), then ``v = seed.dot(logits.flatten())`` in NumPy
with the float32 [96, 128] seed matrix, one image at a time (a batched matmul
may round differently), and bit ``i`` = ``v[i] >= 0``. A hash head in the ONNX
model, if any, is ignored for that reason.

Only NumPy and Pillow are imported with this module (worker processes import
it); ONNX, ONNX Runtime and the converter are imported when a model is built.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..errors import ModelNotFoundError, NeuralHashError, ProviderError
from .runtime import make_session
from .hash import Hash, HashResult
from .image import SIZE, decode, describe, resolve_max_pixels, to_input
from .model_ids import cached_model_id, model_id_of  # noqa: F401 - model_id_of: distributed imports it here
from .seed import FEATURES, HASH_BITS, default_seed_matrix, is_apple_seed, read_seed_file

#: Environment variable: folders (``os.pathsep``-separated) searched for Apple's model
#: instead of the system folders.
MODEL_PATH_ENV = "NEURALHASH_MODEL_PATH"

#: Where macOS keeps NeuralHash (current releases first).
SYSTEM_FOLDERS = (
    Path("/System/Library/Frameworks/Vision.framework/Versions/A/Resources"),
    Path("/System/Library/Frameworks/Vision.framework/Resources"),
)

#: The graph file names of Apple's NeuralHash, in order of preference (float32
#: is the variant the published hashes were computed with).
SYSTEM_MODEL_NAMES = ("NeuralHashv3b-current.espresso.net", "NeuralHashv3b_fp16-current.espresso.net")


def find_system_model() -> Path:
    """The ``.espresso.net`` of Apple's NeuralHash on this machine.

    Searches the folders of ``$NEURALHASH_MODEL_PATH`` (``os.pathsep``-separated;
    when the variable is set, only those), else on macOS the Vision framework's
    resource folders. Either variant is accepted (float32
    ``NeuralHashv3b-current`` is preferred to ``NeuralHashv3b_fp16-current``
    when a folder holds both). Raises :class:`ModelNotFoundError` listing what
    was searched.
    """
    env = os.environ.get(MODEL_PATH_ENV)
    if env is not None:
        folders = [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
        origin = f"${MODEL_PATH_ENV}"
    elif sys.platform == "darwin":
        folders = list(SYSTEM_FOLDERS)
        origin = "the macOS Vision framework"
    else:
        folders = []
        origin = None
    for folder in folders:
        if folder.is_file() and folder.name.endswith(".espresso.net"):
            return folder
        for name in SYSTEM_MODEL_NAMES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    names = " or ".join(SYSTEM_MODEL_NAMES)
    if folders:
        searched = ", ".join(str(f) for f in folders)
        where = f"searched {origin}: {searched}"
    elif env is not None:
        where = f"${MODEL_PATH_ENV} is set but lists no folder"
    else:
        where = f"nothing to search on {sys.platform}: Apple's model ships only with macOS (11.3 and later)"
    raise ModelNotFoundError(
        f"Apple's NeuralHash model ({names}) was not found; {where}. "
        f"Copy the model files from a Mac into a folder and pass that folder, or set {MODEL_PATH_ENV}; "
        "'demo' uses the synthetic demo model"
    )


def _seed_matrix(seed: Any) -> tuple[np.ndarray, str]:
    """(float32 [96, 128] C-contiguous, description) from None, a seed file path or an array."""
    if seed is None:
        return default_seed_matrix(), "Apple's seed matrix"
    if isinstance(seed, (str, os.PathLike)):
        matrix = read_seed_file(seed)
        label = "Apple's seed matrix" if is_apple_seed(matrix) else "custom seed matrix"
        return np.ascontiguousarray(matrix, dtype=np.float32), f"{label} from {os.fsdecode(seed)}"
    try:
        matrix = np.array(seed, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise NeuralHashError(f"the seed must be a seed file path or a {HASH_BITS}x{FEATURES} array ({exc})") from None
    if matrix.shape != (HASH_BITS, FEATURES):
        raise NeuralHashError(f"the seed matrix must be {HASH_BITS}x{FEATURES}, got {list(matrix.shape)}")
    if not np.isfinite(matrix).all():
        raise NeuralHashError("the seed matrix holds non-finite values")
    label = "Apple's seed matrix" if is_apple_seed(matrix) else "custom seed matrix"
    return np.ascontiguousarray(matrix), label


def _cache_key(digests: dict[str, str]) -> str:
    from .. import __version__

    text = "".join(f"{role}:{digests[role]}\n" for role in sorted(digests)) + f"neuralhash:{__version__}\n"
    return hashlib.sha256(text.encode()).hexdigest()


class NeuralHash:
    """A NeuralHash model ready to hash images. Build it with one of the ``from_*`` methods.

    ``model_id`` identifies the model and seed that produced the hashes (a
    well-known name such as ``neuralhash-v3b``, else a sha256: see
    :mod:`neuralhash.hashing.model_ids`); store it with hashes so that hashes
    of different models are never compared.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike | None,
        *,
        onnx_bytes: bytes | None = None,
        seed: Any = None,
        providers: Sequence[str] | None = None,
        description: str | None = None,
        is_synthetic: bool = False,
        threads: int | None = None,
        max_pixels: int | None = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        """Prefer the ``from_*`` constructors. ``onnx_path`` or ``onnx_bytes`` is the model to run;
        ``threads``: ONNX Runtime's intra-op threads (None: its default, one per core);
        ``max_pixels``: the default limit of :meth:`hash` and :meth:`hash_many` (None: Pillow's)."""
        if onnx_path is None and onnx_bytes is None:
            raise NeuralHashError("NeuralHash needs an ONNX model (a path or bytes)")
        if max_pixels is not None:
            resolve_max_pixels(max_pixels)  # validated now, not at the first image
        self._max_pixels = max_pixels
        self._onnx_path = Path(onnx_path).expanduser() if onnx_path is not None else None
        if onnx_bytes is None:
            try:
                onnx_bytes = self._onnx_path.read_bytes()
            except FileNotFoundError:
                raise NeuralHashError(f"{self._onnx_path}: no such ONNX file") from None
            except OSError as exc:
                raise NeuralHashError(f"{self._onnx_path}: cannot read ({exc.strerror or exc})") from None
        self._seed, seed_label = _seed_matrix(seed)  # before the session: a bad seed fails fast
        # A file is given to ONNX Runtime by path (external weights beside it then load too).
        # No idle spinning: inference alternates with image decoding on the same cores.
        self._session = make_session(self._onnx_path if self._onnx_path is not None else onnx_bytes, providers,
                                     threads=threads, spinning=False)
        self._seed.flags.writeable = False
        self._is_synthetic = bool(is_synthetic)

        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        where = str(self._onnx_path) if self._onnx_path is not None else "ONNX model"
        if len(inputs) != 1:
            raise NeuralHashError(f"{where}: NeuralHash takes one input, this model has {len(inputs)}")
        shape = list(inputs[0].shape)
        static = [d if isinstance(d, int) else None for d in shape]
        if len(shape) != 4 or any(d is not None and d != want for d, want in zip(static[1:], (3, SIZE, SIZE))):
            raise NeuralHashError(f"{where}: the input is {shape}, NeuralHash needs [batch, 3, {SIZE}, {SIZE}]")
        self._max_batch = static[0] if static[0] and static[0] > 0 else None  # a fixed batch size (often 1)
        self._input_name = inputs[0].name
        self._output_name = outputs[0].name
        self._model_id = cached_model_id(onnx_bytes, self._seed, cache_dir)
        self._description = f"{description or where}; {seed_label}"

    # -- constructors -------------------------------------------------------------------------

    @classmethod
    def from_onnx(
        cls,
        path: str | os.PathLike,
        *,
        seed: Any = None,
        providers: Sequence[str] | None = None,
        max_pixels: int | None = None,
    ) -> "NeuralHash":
        """An ONNX model (with or without a hash head: its first output, the 128 logits, is used).

        ``seed``: None (Apple's matrix, rebuilt), a seed ``.dat`` file, or a [96, 128] array.
        ``max_pixels``: images with more pixels are refused, unless a call says otherwise
        (None: Pillow's ``PIL.Image.MAX_IMAGE_PIXELS``, 89,478,485 by default).
        """
        return cls(path, seed=seed, providers=providers, description=f"ONNX model {os.fsdecode(path)}",
                   max_pixels=max_pixels)

    @classmethod
    def from_espresso(
        cls,
        src: str | os.PathLike,
        *,
        seed: Any = None,
        providers: Sequence[str] | None = None,
        cache_dir: str | os.PathLike | None = None,
        max_pixels: int | None = None,
        _synthetic: bool = False,
    ) -> "NeuralHash":
        """Apple's Espresso model (a folder or one of its files), converted once and cached.

        The ONNX model is cached as ``<cache>/onnx/<key>.onnx`` (``cache``:
        ``cache_dir``, else :func:`neuralhash.demo.cache_root`), where ``key`` is
        the sha256 of the model files' sha256 digests and this package's version;
        later constructions load the cached file without converting. With
        ``seed`` None, the seed file beside the model
        (``neuralhash_128x96_seed1.dat``) is used when present, else Apple's
        matrix rebuilt. ``max_pixels``: as in :meth:`from_onnx`.
        """
        from ..demo import cache_root
        from ..espresso import locate

        if max_pixels is not None:
            resolve_max_pixels(max_pixels)  # a bad value is found before a model is converted
        if seed is not None:
            _seed_matrix(seed)  # likewise a missing or malformed seed file (49 KB: read twice)
        sources = locate(src)
        digests = sources.sha256()
        root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
        path = root / "onnx" / f"{_cache_key(digests)}.onnx"
        if seed is None and sources.seed is not None:
            seed = sources.seed
        name = sources.net.name[: -len(".espresso.net")] if sources.net is not None else "model"
        precision = "float16" if "fp16" in name else "float32"
        if _synthetic:
            description = f"synthetic demo model (random weights, no perceptual meaning), {sources.net.parent}"
        else:
            description = f"Espresso model {name} ({precision}) from {sources.net.parent}"

        if path.is_file():
            try:
                return cls(path, seed=seed, providers=providers, description=description, is_synthetic=_synthetic,
                           max_pixels=max_pixels, cache_dir=cache_dir)
            except ProviderError:
                raise  # not the cached file's fault
            except NeuralHashError:
                pass  # an unreadable cached file: convert again below and replace it
        data = _convert_to_bytes(sources)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            from ..files.fileio import atomic_write

            atomic_write(path, data)
        except (OSError, NeuralHashError):
            # No writable cache: run from memory (the next construction converts again).
            return cls(None, onnx_bytes=data, seed=seed, providers=providers, description=description,
                       is_synthetic=_synthetic, max_pixels=max_pixels, cache_dir=cache_dir)
        try:
            return cls(path, onnx_bytes=data, seed=seed, providers=providers, description=description,
                       is_synthetic=_synthetic, max_pixels=max_pixels, cache_dir=cache_dir)
        except ProviderError:
            raise
        except NeuralHashError as exc:  # e.g. not NeuralHash's input: name the model given, not the cache file
            raise NeuralHashError(str(exc).replace(str(path), f"{sources.net.parent} (converted)", 1)) from None

    @classmethod
    def demo(
        cls,
        *,
        cache_dir: str | os.PathLike | None = None,
        providers: Sequence[str] | None = None,
        seed: Any = None,
        max_pixels: int | None = None,
    ) -> "NeuralHash":
        """The built-in synthetic model (written once to the cache). Its hashes mean nothing perceptually.

        The ONNX file ``neuralhash demo`` wrote beside the model is used when present (no second
        conversion); a file that does not load is ignored and the model converted."""
        from ..demo import DEMO_ONNX, demo_model_dir

        folder = demo_model_dir(Path(cache_dir).expanduser() if cache_dir is not None else None)
        description = f"synthetic demo model (random weights, no perceptual meaning), {folder}"
        if (folder / DEMO_ONNX).is_file():
            try:
                return cls(folder / DEMO_ONNX, seed=seed, providers=providers, description=description,
                           is_synthetic=True, max_pixels=max_pixels, cache_dir=cache_dir)
            except ProviderError:
                raise
            except NeuralHashError:
                pass  # e.g. cut short by a crash while the demo wrote it: convert below
        return cls.from_espresso(folder, seed=seed, providers=providers, cache_dir=cache_dir, max_pixels=max_pixels,
                                 _synthetic=True)

    @classmethod
    def from_source(
        cls,
        spec: str | os.PathLike | None,
        *,
        seed: Any = None,
        providers: Sequence[str] | None = None,
        cache_dir: str | os.PathLike | None = None,
        max_pixels: int | None = None,
    ) -> "NeuralHash":
        """``"demo"``: the synthetic model; ``*.onnx``: :meth:`from_onnx`; any other path:
        :meth:`from_espresso`; firmware (an IPSW, a UDIF .dmg, an APFS or GPT image): NeuralHash extracted
        once into the cache (:func:`neuralhash.firmware.firmware_model_dir`), then :meth:`from_espresso`;
        None: Apple's model found by :func:`find_system_model`.
        ``max_pixels``: the default pixel limit of the images hashed (see :meth:`from_onnx`)."""
        if spec is None:
            return cls.from_espresso(find_system_model(), seed=seed, providers=providers, cache_dir=cache_dir,
                                     max_pixels=max_pixels)
        text = os.fsdecode(spec)
        if text == "demo":
            return cls.demo(cache_dir=cache_dir, providers=providers, seed=seed, max_pixels=max_pixels)
        if text.lower().endswith(".onnx"):
            return cls.from_onnx(text, seed=seed, providers=providers, max_pixels=max_pixels)
        from ..firmware import firmware_model_dir, sniff

        local = os.path.expanduser(text)
        if os.path.isfile(local) and sniff(local) is not None:  # an IPSW, a .dmg, an APFS or GPT image
            text = os.fspath(firmware_model_dir(local, cache_dir))
        return cls.from_espresso(text, seed=seed, providers=providers, cache_dir=cache_dir, max_pixels=max_pixels)

    # -- properties ---------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        """The model's id: ``neuralhash-v3b`` for Apple's NeuralHash with Apple's seed, else a sha256
        (hex) of the feature network and the seed (:mod:`neuralhash.hashing.model_ids`)."""
        return self._model_id

    @property
    def description(self) -> str:
        return self._description

    @property
    def providers(self) -> list[str]:
        """The execution providers of the ONNX Runtime session, in priority order."""
        return list(self._session.get_providers())

    @property
    def is_synthetic(self) -> bool:
        """True for the demo model (random weights: hashes without perceptual meaning)."""
        return self._is_synthetic

    @property
    def onnx_path(self) -> Path | None:
        """The ONNX file run (None when the model runs from memory only)."""
        return self._onnx_path

    @property
    def max_pixels(self) -> int | None:
        """The default pixel limit of :meth:`hash` and :meth:`hash_many` (None: Pillow's ``MAX_IMAGE_PIXELS``)."""
        return self._max_pixels

    @property
    def seed(self) -> np.ndarray:
        """The float32 [96, 128] projection (read-only)."""
        return self._seed

    @property
    def input_name(self) -> str:
        return self._input_name

    @property
    def output_name(self) -> str:
        """The output used: the model's first (the 128 logits)."""
        return self._output_name

    def __repr__(self) -> str:
        return f"NeuralHash({self._description!r}, model_id={self._model_id[:12]}...)"

    # -- hashing ------------------------------------------------------------------------------

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """The network's first output for a float32 [N, 3, 360, 360] batch, as [N, features]."""
        batch = np.asarray(batch, dtype=np.float32)
        step = self._max_batch or max(len(batch), 1)
        parts = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            try:
                out = self._session.run([self._output_name], {self._input_name: chunk})[0]
            except Exception as exc:
                if not _from_onnxruntime(exc):
                    raise  # not ORT's failure (e.g. a signal handler's exception): let it through
                raise NeuralHashError(f"onnxruntime failed on a batch of {len(chunk)} ({exc})") from None
            parts.append(np.asarray(out).reshape(len(chunk), -1))
        out = np.concatenate(parts) if len(parts) != 1 else parts[0]
        if out.shape[1] != FEATURES:
            raise NeuralHashError(
                f"the model's output {self._output_name!r} has {out.shape[1]} values per image; "
                f"the seed matrix projects {FEATURES}"
            )
        return out

    def hash_pixels(self, pixels: Sequence[np.ndarray]) -> list[Hash]:
        """The hashes of images already preprocessed by :func:`~neuralhash.hashing.image.decode`
        (uint8 [360, 360, 3] each), run through the network as one batch.

        A network output that is not finite (NaN or infinity in the logits, or a
        projection that overflows float32) raises :class:`NeuralHashError`
        naming the image's position in ``pixels``: it is never turned into bits.
        """
        out = self.hash_pixels_each(pixels)
        for i, h in enumerate(out):
            if isinstance(h, str):
                raise NeuralHashError(f"image {i} of {len(out)}: {h}")
        return out  # type: ignore[return-value]

    def hash_pixels_each(self, pixels: Sequence[np.ndarray]) -> list[Hash | str]:
        """Like :meth:`hash_pixels`, one batch, but per image its Hash or the reason there is
        none (a non-finite network output), so one bad image does not fail the others."""
        if not len(pixels):
            return []
        batch = np.stack([to_input(p) for p in pixels])
        logits = self.logits(batch)
        finite = np.isfinite(logits).all(axis=1)
        out: list[Hash | str] = []
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below, per image
            for i in range(len(pixels)):
                if not finite[i]:
                    out.append(_non_finite("the network's output", logits[i]))
                    continue
                # Exactly the reference's seed.dot(outs[0].flatten()), one image at a time.
                v = self._seed.dot(logits[i].flatten())
                if not np.isfinite(v).all():  # huge finite logits: the float32 projection overflows
                    out.append(_non_finite("the projection seed @ logits", v))
                    continue
                out.append(Hash.from_projection(v))
        return out

    def hash(self, image: Any, *, exif_transpose: bool = False, fast: bool = False,
             max_pixels: int | None = None) -> Hash:
        """The hash of one image: a path, encoded bytes, a PIL image or a uint8 array.

        Raises :class:`~neuralhash.errors.ImageError` (naming the input and the
        reason) when the image cannot be read or has more than ``max_pixels``
        pixels (None: the model's ``max_pixels``, else Pillow's limit), and
        :class:`NeuralHashError` when the network's output for it is not finite.
        """
        limit = self._max_pixels if max_pixels is None else max_pixels
        h = self.hash_pixels_each([decode(image, exif_transpose=exif_transpose, fast=fast, max_pixels=limit)])[0]
        if isinstance(h, str):
            raise NeuralHashError(f"{describe(image)}: {h}")
        return h

    def hash_many(
        self,
        items: Iterable[Any],
        *,
        batch_size: int = 4,
        workers: int | None = None,
        exif_transpose: bool = False,
        fast: bool = False,
        max_pixels: int | None = None,
    ) -> Iterator[HashResult]:
        """Hash every item of ``items`` (any iterable, consumed lazily), yielding results in input order.

        One :class:`HashResult` per item; an unreadable item gives a result with
        ``error`` set and never stops the run. ``workers`` processes decode
        and resize images while this process runs the network on batches of
        ``batch_size`` (None: ``os.cpu_count()``; 0: decode here, no processes).
        At most ``workers * 4 + batch_size`` items are in flight, so memory stays
        bounded for any number of items. Closing the iterator early (``break``)
        stops the workers. An image of more than ``max_pixels`` pixels (None:
        the model's ``max_pixels``, else Pillow's ``PIL.Image.MAX_IMAGE_PIXELS``)
        is an error result, refused from its header. ``workers`` is capped at
        ``pipeline.MAX_WORKERS_PER_CPU`` (4) per CPU.

        Worker processes (``forkserver``/``spawn``) import the main script
        again: call this under ``if __name__ == "__main__":``. A script that
        calls it at top level, unguarded, decodes in this process instead (one
        core), with a ``RuntimeWarning`` saying so.
        """
        if isinstance(items, (str, bytes, os.PathLike)) or hasattr(items, "getpixel"):
            raise NeuralHashError("hash_many takes an iterable of images (paths, bytes, PIL images, arrays); "
                                  "for a single image use hash()")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise NeuralHashError(f"batch_size must be a positive integer, got {batch_size!r}")
        if workers is None:
            workers = os.cpu_count() or 1
        if not isinstance(workers, int) or workers < 0:
            raise NeuralHashError(f"workers must be a non-negative integer, got {workers!r}")
        from .pipeline import MAX_WORKERS_PER_CPU, main_reruns_caller

        workers = min(workers, MAX_WORKERS_PER_CPU * (os.cpu_count() or 1))
        if workers:
            if main_reruns_caller():
                warnings.warn(
                    "hash_many decodes in this process: this script calls it outside "
                    "`if __name__ == \"__main__\":`, and worker processes would run the script again; "
                    "put the call under that guard to decode in parallel", RuntimeWarning, stacklevel=2)
                workers = 0
        limit = resolve_max_pixels(self._max_pixels if max_pixels is None else max_pixels)
        return self._hash_many(iter(items), batch_size, workers, exif_transpose, fast, limit)

    def _hash_many(self, items: Iterator[Any], batch_size: int, workers: int, exif_transpose: bool,
                   fast: bool, max_pixels: int) -> Iterator[HashResult]:
        from .pipeline import decoded

        stream = decoded(items, workers=workers, window=workers * 4 + batch_size,
                         exif_transpose=exif_transpose, fast=fast, max_pixels=max_pixels, stall_marks=True)
        pending: list[tuple[Any, np.ndarray | None, str | None]] = []
        try:
            for entry in stream:
                if entry is None:  # the next image is still decoding: run the network on what is ready
                    if pending:
                        yield from self._finish(pending)
                        pending = []
                    continue
                pending.append(entry)
                if len(pending) >= batch_size:
                    yield from self._finish(pending)
                    pending = []
            yield from self._finish(pending)
        finally:
            stream.close()

    def _finish(self, pending: list[tuple[Any, np.ndarray | None, str | None]]) -> Iterator[HashResult]:
        hashes = iter(self.hash_pixels_each([pixels for _, pixels, _ in pending if pixels is not None]))
        for item, pixels, error in pending:
            if pixels is None:
                yield HashResult(_result_item(item), None, error)
                continue
            h = next(hashes)
            if isinstance(h, str):  # a non-finite network output: this image's error, never a hash
                yield HashResult(_result_item(item), None, f"{describe(item)}: {h}")
            else:
                yield HashResult(_result_item(item), h, None)



def _non_finite(what: str, values: np.ndarray) -> str:
    kinds = " and ".join(k for k, present in (("NaN", np.isnan(values).any()), ("infinity", np.isinf(values).any()))
                         if present)
    return (f"{what} is not finite ({kinds} in {int((~np.isfinite(values)).sum())} of {values.size} values): "
            "the model's weights are broken or overflow on this image; no hash")


def _result_item(item: Any) -> Any:
    """Paths as given; in-memory inputs as a placeholder (``<bytes>``, ``<image>``, ``<array>``)."""
    return item if isinstance(item, (str, os.PathLike)) else describe(item)


def _convert_to_bytes(sources) -> bytes:
    from ..convert import convert
    from ..espresso import load_model

    proto = convert(load_model(sources))
    try:
        return proto.SerializeToString(deterministic=True)
    except ValueError as exc:
        raise NeuralHashError(f"{sources.net}: cannot serialise the ONNX model ({exc})") from None


def _from_onnxruntime(exc: BaseException) -> bool:
    """True for ONNX Runtime's own exception types (Fail, InvalidArgument, RuntimeException...)."""
    return type(exc).__module__.split(".")[0] == "onnxruntime"
