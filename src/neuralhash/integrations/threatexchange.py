"""A ``threatexchange`` extension: NeuralHash as a signal type for photos.

Enable it in the ``threatexchange`` CLI::

    pip install 'neuralhash-toolkit[threatexchange]'
    threatexchange config extensions add neuralhash.integrations.threatexchange
    threatexchange hash photo photo.jpg          # neuralhash 59a34eabe31910abfb06f308

and in Hasher-Matcher-Actioner by listing :class:`NeuralHashSignal` in the
``signal_types`` of its storage (see the README).

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

import os
import pathlib
import random
import threading
import typing as t

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

    Identical hashes share one slot (all their entries come back together). The
    search structure is built on the first query after an ``add`` and is not
    pickled (it is rebuilt after loading), so serialised indexes stay small.
    """

    def __init__(self, threshold: t.Optional[int] = None) -> None:
        super().__init__()
        self.threshold = default_threshold() if threshold is None else int(threshold)
        self._slot: t.Dict[str, int] = {}
        self._hashes: t.List[str] = []
        self._entries: t.List[t.List[tx_index.T]] = []
        self._search: t.Any = None

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, signal_str: str, entry: tx_index.T) -> None:
        key = _normalise(signal_str)
        slot = self._slot.get(key)
        if slot is None:
            slot = self._slot[key] = len(self._hashes)
            self._hashes.append(key)
            self._entries.append([])
            self._search = None
        self._entries[slot].append(entry)

    def query(self, query: str) -> t.Sequence[tx_index.IndexMatchUntyped[
            tx_index.SignalSimilarityInfoWithIntDistance, tx_index.T]]:
        """Every entry whose hash is within ``threshold`` bits of ``query``, nearest first."""
        if not self._hashes:
            return []
        key = _normalise(query)
        if self._search is None:
            from ..matching import HashIndex, pack_hex

            self._search = HashIndex(pack_hex(self._hashes))
        found = self._search.query(key, self.threshold)
        return [
            tx_index.IndexMatchUntyped(tx_index.SignalSimilarityInfoWithIntDistance(int(d)), entry)
            for i, d in zip(found.indices.tolist(), found.distances.tolist())
            for entry in self._entries[i]
        ]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_search"] = None
        return state


TX_MANIFEST = ThreatExchangeExtensionManifest(signal_types=(NeuralHashSignal,))
