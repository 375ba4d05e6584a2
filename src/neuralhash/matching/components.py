"""Near-duplicate groups: connected components of the pairs a self-join finds."""

from __future__ import annotations

import numpy as np

from ..errors import NeuralHashError
from .index import Pairs


def _edges(pairs, n: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(pairs, Pairs):
        i, j = pairs.i, pairs.j
    elif isinstance(pairs, tuple) and len(pairs) >= 2:
        i, j = np.asarray(pairs[0]), np.asarray(pairs[1])
    else:
        arr = np.asarray(pairs)
        if arr.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise NeuralHashError(f"pairs must be Pairs, (i, j) arrays or an [K, 2] array, got shape {arr.shape}")
        i, j = arr[:, 0], arr[:, 1]
    if i.shape != j.shape or i.ndim != 1:
        raise NeuralHashError(f"pair arrays must be 1-D and of equal length, got {i.shape} and {j.shape}")
    if i.size and not (np.issubdtype(i.dtype, np.integer) and np.issubdtype(j.dtype, np.integer)):
        raise NeuralHashError("pair indices must be integers")
    i, j = i.astype(np.int64), j.astype(np.int64)
    if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n):
        raise NeuralHashError(f"pair indices out of range: they must lie in 0..{n - 1}")
    return i, j


def connected_components(pairs, n: int, *, parent: np.ndarray | None = None) -> np.ndarray:
    """Component label (int64 [n]) of each of ``n`` items linked by ``pairs``.

    ``pairs`` is a :class:`Pairs`, a tuple ``(i, j)`` of index arrays or an
    ``[K, >=2]`` array. The label of an item is the smallest index in its component,
    so singletons are labelled by themselves and labels are deterministic.

    Vectorised union-find: each round hooks the larger root of every edge whose ends
    have different roots to the smaller one (``np.minimum.at``), then compresses
    paths by pointer jumping until every item points at its root; edges already
    inside one component are dropped between rounds.

    ``parent``: the labels of an earlier call, to fold in more pairs (so pairs can
    be streamed in chunks); the updated labels are returned.
    """
    if n < 0:
        raise NeuralHashError(f"n must be >= 0, got {n}")
    i, j = _edges(pairs, n)
    if parent is None:
        parent = np.arange(n, dtype=np.int64)
    elif parent.shape != (n,) or parent.dtype != np.int64:
        raise NeuralHashError(f"parent must be an int64 array of {n} labels")
    while i.size:
        ri, rj = parent[i], parent[j]
        live = ri != rj
        if not live.any():
            break
        i, j, ri, rj = i[live], j[live], ri[live], rj[live]
        np.minimum.at(parent, np.maximum(ri, rj), np.minimum(ri, rj))
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


def component_groups(labels, min_size: int = 2) -> list[np.ndarray]:
    """The components with at least ``min_size`` members, each as a sorted int64
    array of indices, ordered by their smallest member."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    order = np.argsort(labels, kind="stable").astype(np.int64)
    sorted_labels = labels[order]
    cut = np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [labels.size]))
    # Only the components kept become arrays: millions of singletons would cost ~100 bytes each.
    keep = np.flatnonzero(ends - starts >= min_size)
    groups = [order[a:b] for a, b in zip(starts[keep].tolist(), ends[keep].tolist())]
    groups.sort(key=lambda g: int(g[0]))
    return groups
