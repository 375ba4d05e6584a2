"""What a robustness run measured, and the statistics drawn from it.

A :class:`RobustnessResult` holds, for every hash function, the Hamming
distance between each original image and each of its edited copies, and the
distances between every pair of distinct originals (the baseline). From the
two it derives, per hash, the operating threshold: the largest distance at
which no pair of distinct images matches, and the fraction of edited copies
still matched at that threshold, per edit. With each copy's distance to the
nearest *other* original it also gives recall at a fixed precision, per edit and
overall, as Thorn's perception benchmark does (:meth:`RobustnessResult.recall_at_precision`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .edits import Edit

MISSING = -1  # a distance that could not be measured (the edit or a hash failed)


@dataclass(frozen=True)
class HasherInfo:
    """One hash function of the comparison."""

    name: str         # "NeuralHash", "pHash", "dHash", "PDQ"
    bits: int         # hash length in bits
    description: str  # one line: which implementation, which settings


@dataclass(frozen=True)
class Failure:
    """An image (edit None) or one edited copy that could not be measured."""

    image: str
    edit: str | None
    reason: str


@dataclass(frozen=True)
class RecallAtPrecision:
    """Recall at a fixed precision, as perception's benchmark computes it.

    ``threshold``: the largest distance counted as a match (None when even the
    nearest copies cannot be matched at that precision); ``recall``: the share of
    the ``copies`` within it of their own original; ``precision``: at that threshold,
    copies matched to their own original over those plus copies within it of some
    other original (NaN when nothing is matched).
    """

    threshold: int | None
    recall: float
    precision: float
    copies: int


def recall_at_precision(own, other, precision: float = 0.9999) -> RecallAtPrecision:
    """perception's ``compute_threshold_precision_recall`` on distances, ties counted together.

    ``own``: each copy's distance to its own original; ``other``: to the nearest other
    original (MISSING: none). At a threshold ``t``, a copy is a true positive when
    ``own <= t`` and a false positive when ``other <= t`` (it can be both). Thresholds
    are tried in increasing order of the ``own`` values; the answer is the last one
    before precision first falls below ``precision``.
    """
    own = np.asarray(own, dtype=np.int64).ravel()
    other = np.asarray(other, dtype=np.int64).ravel()
    keep = own != MISSING
    own, other = own[keep], other[keep]
    n = int(own.size)
    if n == 0:
        return RecallAtPrecision(None, float("nan"), float("nan"), 0)
    other = np.where(other == MISSING, np.iinfo(np.int64).max, other)
    candidates = np.unique(own)
    tp = np.searchsorted(np.sort(own), candidates, side="right")
    fp = np.searchsorted(np.sort(other), candidates, side="right")
    prec = tp / (tp + fp)
    bad = np.flatnonzero(prec < precision)
    k = (bad[0] if bad.size else len(candidates)) - 1
    if k < 0:
        return RecallAtPrecision(None, 0.0, float("nan"), n)
    return RecallAtPrecision(int(candidates[k]), float(tp[k] / n), float(prec[k]), n)


@dataclass
class RobustnessResult:
    """Distances measured by :func:`neuralhash.robustness.measure`.

    ``distances[name]`` is an int32 array [images, edits] of bit distances
    between original ``i`` and its copy under edit ``j`` (``MISSING`` where it
    could not be measured). ``distinct[name]`` holds the distances between all
    pairs ``i < j`` of originals that hashed, in row-major pair order, and
    ``pairs`` the (i, j) indices of those pairs.
    """

    model: str                      # the NeuralHash model description
    model_id: str
    synthetic: bool                 # the demo model: NeuralHash figures carry no meaning
    seed: int
    images: list[str]               # the originals, as named on input
    sizes: list[tuple[int, int]]    # (width, height) of each original; (0, 0) when it could not be read
    edits: list[Edit]
    hashers: list[HasherInfo]
    distances: dict[str, np.ndarray]
    distinct: dict[str, np.ndarray]
    pairs: np.ndarray               # int [pairs, 2]
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a hash left out because its package is missing
    max_side: int | None = None     # originals shrunk to this longer side before editing (None: as read)
    # name -> int32 [images, edits]: each copy's distance to the nearest *other* original
    # (MISSING where unmeasured or no other original); what recall at a precision needs.
    nearest_other: dict[str, np.ndarray] = field(default_factory=dict)

    # -- lookups ----------------------------------------------------------------------------

    def hasher(self, name: str) -> HasherInfo:
        for info in self.hashers:
            if info.name == name:
                return info
        raise KeyError(name)

    @property
    def edit_labels(self) -> list[str]:
        return [e.label for e in self.edits]

    # -- statistics -------------------------------------------------------------------------

    def threshold(self, name: str) -> int | None:
        """The largest distance at which no two distinct originals match (distance <= threshold).

        None with fewer than two originals (no baseline); -1 when two distinct
        originals have the same hash (no threshold avoids a false match).
        """
        distinct = self.distinct[name]
        if distinct.size == 0:
            return None
        return int(min(int(distinct.min()) - 1, self.hasher(name).bits))

    def match_rates(self, name: str, threshold: int | None = None) -> np.ndarray:
        """Per edit, the fraction of measured copies within ``threshold`` of their original.

        ``threshold`` None: :meth:`threshold`. NaN for an edit with no measured
        copy, or when there is no threshold.
        """
        if threshold is None:
            threshold = self.threshold(name)
        d = self.distances[name]
        measured = d != MISSING
        counts = measured.sum(axis=0)
        if threshold is None:
            return np.full(d.shape[1], np.nan)
        matched = ((d <= threshold) & measured).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, matched / np.maximum(counts, 1), np.nan)

    def edit_stats(self, name: str) -> dict[str, np.ndarray]:
        """Per edit: ``mean``, ``median``, ``max`` distance in bits (NaN if none measured) and ``count``."""
        d = self.distances[name].astype(float)
        d[d == MISSING] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an edit nobody could measure: NaN is the answer
            return {
                "mean": np.nanmean(d, axis=0),
                "median": np.nanmedian(d, axis=0),
                "max": np.nanmax(d, axis=0) if len(d) else np.full(d.shape[1], np.nan),
                "count": np.sum(~np.isnan(d), axis=0),
            }

    def curve(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Against every threshold 0..bits: the fraction of all measured edited copies
        matched, and the fraction of distinct pairs falsely matched (NaN without pairs)."""
        bits = self.hasher(name).bits
        thresholds = np.arange(bits + 1)
        d = self.distances[name]
        measured = d[d != MISSING]
        copies = np.searchsorted(np.sort(measured), thresholds, side="right") / max(measured.size, 1)
        distinct = np.sort(self.distinct[name])
        if distinct.size:
            false = np.searchsorted(distinct, thresholds, side="right") / distinct.size
        else:
            false = np.full(thresholds.shape, np.nan)
        return thresholds, copies, false


    def recall_at_precision(self, name: str, precision: float = 0.9999
                            ) -> tuple[list[RecallAtPrecision], RecallAtPrecision]:
        """Per edit (each its own threshold) and over all edits pooled (one threshold), the
        recall at ``precision`` (default 99.99%, the precision of perception's published
        table), from each copy's distance to its original and to the nearest other one.

        Raises KeyError when the result holds no nearest-other distances for ``name``
        (a result built before they were measured)."""
        own, other = self.distances[name], self.nearest_other[name]
        per_edit = [recall_at_precision(own[:, j], other[:, j], precision) for j in range(own.shape[1])]
        return per_edit, recall_at_precision(own, other, precision)
