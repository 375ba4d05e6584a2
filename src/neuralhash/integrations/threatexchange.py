"""A ``threatexchange`` extension: NeuralHash as a signal type for photos.

Enable it in the ``threatexchange`` CLI::

    pip install '.[threatexchange]'
    threatexchange config extensions add neuralhash.integrations.threatexchange
    threatexchange hash photo photo.jpg          # neuralhash 59a34eabe31910abfb06f308

and in Hasher-Matcher-Actioner by listing :class:`NeuralHashSignal` in the
``signal_types`` of its storage: ``neuralhash.integrations.hma.OMM_CONFIG`` is such a
configuration (docs/hma.md).

The signal (``get_name()`` = ``"neuralhash"``) is the 24-hex-digit NeuralHash that
``neuralhash hash`` prints, computed by this project's exact pipeline. Hashes
compare by Hamming distance; a match is a distance of at most
:data:`DEFAULT_THRESHOLD` bits (overridable per index, or with
``$NEURALHASH_TX_THRESHOLD``). The match index is :class:`NeuralHashIndex`, backed by
:class:`neuralhash.matching.HashIndex` (multi-index hashing, exact).

The model: ``$NEURALHASH_MODEL`` (anything ``neuralhash hash --model`` takes: a
converted ``.onnx`` file, a folder of Apple's Espresso files, or ``demo`` for the
synthetic test model); else Apple's model found as ``neuralhash hash`` finds it
without ``--model`` (the folders of ``$NEURALHASH_MODEL_PATH``, else macOS's Vision
framework); from Python, :func:`set_model`. Without one, hashing fails with a message
saying what to set. Matching hashes needs no model.

Unlike threatexchange's built-in hashers, an image that cannot be read is an error
naming it (:class:`NeuralHashSignalError`, which the CLI prints as one line), never
an empty hash.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import random
import threading
import typing as t

import numpy as np

from . import missing_extra
from ..errors import NeuralHashError

try:
    from threatexchange.cli.exceptions import CommandError
    from threatexchange.content_type.content_base import ContentType
    from threatexchange.content_type.photo import PhotoContent
    from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest
    from threatexchange.signal_type import index as tx_index
    from threatexchange.signal_type import signal_base
except ImportError:  # pragma: no cover - exercised without the extra
    raise missing_extra("threatexchange", "threatexchange") from None

#: Environment variable: the model to hash with (a ``.onnx`` file, an Espresso folder, or ``demo``).
MODEL_ENV = "NEURALHASH_MODEL"
#: Environment variable: the match threshold in bits, overriding :data:`DEFAULT_THRESHOLD`.
THRESHOLD_ENV = "NEURALHASH_TX_THRESHOLD"
#: Bits of 96 within which two hashes match by default. Resizing and recompression move a
#: NeuralHash by 0-2 bits and different Apple devices by a few; unrelated images lie 41-53
#: bits apart on Apple's model (README, robustness report). 8 keeps a wide margin on both sides.
DEFAULT_THRESHOLD = 8

_lock = threading.Lock()
_model: t.Any = None


class NeuralHashSignalError(NeuralHashError, CommandError, ValueError):
    """Hashing failed (no model, an unreadable image). A ``CommandError`` too, so the
    ``threatexchange`` CLI prints the message as one line instead of a traceback, and a
    ``ValueError``, which Hasher-Matcher-Actioner answers as a 400 with the message when it
    hashes a URL (``GET /h/hash``) instead of a bare 500."""

    def __init__(self, message: str) -> None:
        CommandError.__init__(self, message, 1)


def set_model(model: t.Any) -> None:
    """Hash with ``model``: a :class:`~neuralhash.hashing.NeuralHash`, a model spec as
    ``neuralhash hash --model`` takes, or None to go back to the environment's."""
    global _model
    if model is not None and not hasattr(model, "hash_pixels"):
        model = _load(model)
    with _lock:
        _model = model


def _load(spec: t.Any):
    from ..hashing import NeuralHash

    try:
        return NeuralHash.from_source(spec)
    except NeuralHashError as exc:
        raise NeuralHashSignalError(
            f"neuralhash signal: no usable model ({exc}). Set ${MODEL_ENV} to a converted .onnx file or a "
            f"folder of Apple's Espresso files, or ${'NEURALHASH_MODEL_PATH'} to the folder holding Apple's model"
        ) from None


def get_model():
    """The model used to hash (loaded on first use, then kept)."""
    global _model
    with _lock:
        if _model is None:
            _model = _load(os.environ.get(MODEL_ENV) or None)
        return _model


def default_threshold() -> int:
    """:data:`DEFAULT_THRESHOLD`, or ``$NEURALHASH_TX_THRESHOLD`` when set."""
    text = os.environ.get(THRESHOLD_ENV)
    if not text:
        return DEFAULT_THRESHOLD
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 96:
        raise NeuralHashSignalError(f"${THRESHOLD_ENV} must be a number of bits 0..96, got {text!r}")
    return value


def _normalise(signal_str: str) -> str:
    text = signal_str.strip().lower() if isinstance(signal_str, str) else ""
    if len(text) != 24 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"invalid NeuralHash {signal_str!r}: expected 24 hex digits (96 bits)")
    return text


def hamming(hash1: str, hash2: str) -> int:
    return (int(_normalise(hash1), 16) ^ int(_normalise(hash2), 16)).bit_count()


class NeuralHashSignal(
    signal_base.SimpleSignalType,
    signal_base.BytesHasher,
    signal_base.CanGenerateRandomSignal,
):
    """Apple's NeuralHash (96 bits, 24 hex digits) of a photo, as ``neuralhash hash`` computes it.

    Perceptual: resized or recompressed copies keep (nearly) the same hash, so
    matching is by Hamming distance, at most :data:`DEFAULT_THRESHOLD` bits by default.
    """

    @classmethod
    def get_name(cls) -> str:
        return "neuralhash"

    @classmethod
    def get_content_types(cls) -> t.List[t.Type[ContentType]]:
        return [PhotoContent]

    @classmethod
    def get_index_cls(cls) -> t.Type["NeuralHashIndex"]:
        return NeuralHashIndex

    @classmethod
    def validate_signal_str(cls, signal_str: str) -> str:
        return _normalise(signal_str)

    @classmethod
    def compare_hash(cls, hash1: str, hash2: str,
                     distance_threshold: t.Optional[int] = None) -> signal_base.SignalComparisonResult:
        limit = default_threshold() if distance_threshold is None else distance_threshold
        return signal_base.SignalComparisonResult.from_simple_dist(hamming(hash1, hash2), limit)

    @classmethod
    def hash_from_bytes(cls, bytes_: bytes) -> str:
        return cls._hash(bytes_)

    @classmethod
    def hash_from_file(cls, file: pathlib.Path) -> str:
        return cls._hash(pathlib.Path(file))

    @classmethod
    def _hash(cls, source: t.Any) -> str:
        model = get_model()
        try:
            return model.hash(source).hex
        except NeuralHashError as exc:
            raise NeuralHashSignalError(f"neuralhash signal: {exc}") from None

    @classmethod
    def get_random_signal(cls) -> str:
        return f"{random.getrandbits(96):024x}"

    @staticmethod
    def get_examples() -> t.List[str]:
        # The NeuralHash of the dog photo published with the 2021 reverse-engineering
        # (Apple's model), then three copies of it 1, 2 and 3 bits away, so that the
        # sample exchange shows near matches.
        base = "59a34eabe31910abfb06f308"
        return [base] + [f"{int(base, 16) ^ ((1 << k) - 1) << 40:024x}" for k in (1, 2, 3)]


class NeuralHashIndex(tx_index.SignalTypeIndex[tx_index.T]):
    """Exact Hamming-radius index over NeuralHash signals (multi-index hashing).

    Built for the indexes Hasher-Matcher-Actioner keeps (millions of signals, bank
    content ids as entries): the hashes are held as packed words (12 bytes a signal),
    the entries as one integer array when they are all integers (else a list), and
    :meth:`build` / :meth:`add_all` convert a million signals at a time with numpy.
    Every entry comes back, also when several share a hash.

    Serialised by the base class (a pickle: HMA loads every index with
    ``SignalTypeIndex.deserialize``, never a subclass's), holding only those arrays
    (16-20 bytes a signal); the search tables are rebuilt when the pickle is loaded,
    which in HMA happens in a matcher's background refresh, before its first query.
    """

    #: Signals converted at a time by add_all (bounds the temporary memory of a build).
    CHUNK = 1 << 20

    def __init__(self, threshold: t.Optional[int] = None) -> None:
        super().__init__()
        self.threshold = default_threshold() if threshold is None else int(threshold)
        self._hi = np.zeros(0, np.uint64)
        self._lo = np.zeros(0, np.uint32)
        self._entries: t.Any = np.zeros(0, np.int64)  # ndarray of ints, or a list
        self._pending: t.List[t.Tuple[str, tx_index.T]] = []
        self._search: t.Any = None

    def __len__(self) -> int:
        return len(self._hi) + len(self._pending)

    def add(self, signal_str: str, entry: tx_index.T) -> None:
        self._pending.append((_normalise(signal_str), entry))
        self._search = None

    def add_all(self, entries: t.Iterable[t.Tuple[str, tx_index.T]]) -> None:
        self._flush()
        his, los, metas = [self._hi], [self._lo], [self._entries]
        items = iter(entries)
        while chunk := list(itertools.islice(items, self.CHUNK)):
            # Comprehensions, not zip(*chunk): that makes an iterator object per pair, and
            # allocating millions of objects runs the garbage collector over HMA's whole list.
            hi, lo = _pack_words([h for h, _ in chunk])
            his.append(hi)
            los.append(lo)
            metas.append(_entry_array([e for _, e in chunk]))
            del chunk
        self._set(np.concatenate(his), np.concatenate(los), _join_entries(metas))

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self.add_all(pending)

    def _set(self, hi: np.ndarray, lo: np.ndarray, entries: t.Any) -> None:
        self._hi, self._lo, self._entries = hi, lo, entries
        self._search = None

    def query(self, query: str) -> t.Sequence[tx_index.IndexMatchUntyped[
            tx_index.SignalSimilarityInfoWithIntDistance, tx_index.T]]:
        """Every entry whose hash is within ``threshold`` bits of ``query``, nearest first."""
        key = _normalise(query)
        self._flush()
        if not len(self._hi):
            return []
        found = self._searcher().query(key, self.threshold)
        entries = self._entries
        picked = entries[found.indices].tolist() if isinstance(entries, np.ndarray) else \
            [entries[i] for i in found.indices.tolist()]
        return [
            tx_index.IndexMatchUntyped(tx_index.SignalSimilarityInfoWithIntDistance(int(d)), entry)
            for entry, d in zip(picked, found.distances.tolist())
        ]

    def _searcher(self):
        if self._search is None:
            from ..matching import HashIndex

            self._search = HashIndex.from_words(self._hi, self._lo).build()
        return self._search

    def __getstate__(self) -> dict:
        self._flush()
        return {"version": 2, "threshold": self.threshold, "hi": self._hi, "lo": self._lo,
                "entries": self._entries}

    def __setstate__(self, state: dict) -> None:
        if state.get("version") != 2:
            raise NeuralHashSignalError(
                "neuralhash index: this serialised index was written by an older version of "
                "neuralhash.integrations.threatexchange; build it again (HMA: flask build_indices)")
        self.threshold = int(state["threshold"])
        self._pending = []
        self._set(state["hi"], state["lo"], state["entries"])
        if len(self._hi):
            self._searcher()  # HMA loads indexes in the background: have the tables ready for queries


def _pack_words(hexes: t.List[str]) -> t.Tuple[np.ndarray, np.ndarray]:
    from ..matching import pack_hex, to_words

    try:
        return to_words(pack_hex(hexes))
    except NeuralHashError:  # blanks, or a bad hash: normalise each, which names the bad one
        return to_words(pack_hex([_normalise(h) for h in hexes]))


def _entry_array(entries: t.List[t.Any]) -> t.Any:
    """An int array when every entry is an int that fits (HMA's content ids), else the list."""
    if set(map(type, entries)) == {int}:
        try:
            return np.array(entries, dtype=np.int64)
        except OverflowError:
            pass
    return list(entries)


def _join_entries(parts: t.List[t.Any]) -> t.Any:
    if all(isinstance(p, np.ndarray) for p in parts):
        joined = np.concatenate(parts)
        if joined.size and joined.min() >= np.iinfo(np.int32).min and joined.max() <= np.iinfo(np.int32).max:
            joined = joined.astype(np.int32)  # 4 bytes an entry held and serialised
        return joined
    out: t.List[t.Any] = []
    for p in parts:
        out.extend(p.tolist() if isinstance(p, np.ndarray) else p)
    return out


TX_MANIFEST = ThreatExchangeExtensionManifest(signal_types=(NeuralHashSignal,))
