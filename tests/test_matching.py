"""The Hamming search engine: packing, queries, self-join and components.

Every search result is checked against an independent reference that compares
unpacked bits one by one (it shares no code with the engine's popcount paths).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuralhash.errors import NeuralHashError
from neuralhash.matching import (
    HashIndex,
    Pairs,
    block_layout,
    component_groups,
    connected_components,
    from_words,
    pack_bits,
    pack_hex,
    to_words,
    unpack_bits,
    unpack_hex,
)

BLOCK_SIZES = (8, 12, 16, 20, 24, 32)

# ---------------------------------------------------------------- reference


def ref_distances(packed: np.ndarray, query: np.ndarray) -> np.ndarray:
    bits = unpack_bits(packed).astype(np.int16)
    qbits = unpack_bits(query.reshape(1, 12)).astype(np.int16)
    return (bits != qbits).sum(axis=1)


def ref_query(packed, query, r):
    d = ref_distances(packed, query)
    idx = np.flatnonzero(d <= r)
    order = np.lexsort((idx, d[idx]))
    return idx[order], d[idx][order]


def ref_dist_matrix(packed):
    bits = unpack_bits(packed).astype(np.int16)
    return (bits[:, None, :] != bits[None, :, :]).sum(axis=2)


def ref_pairs(dist, r):
    i, j = np.nonzero(np.triu(dist <= r, k=1))
    return i, j, dist[i, j]


def planted(rng: np.random.Generator, n_random: int, n_copies: int, max_flip: int = 10) -> np.ndarray:
    """Random hashes plus copies of random ones with 0..max_flip bits flipped, shuffled."""
    base = rng.integers(0, 256, (n_random, 12), dtype=np.uint8)
    if n_random == 0 or n_copies == 0:
        return base
    bits = unpack_bits(base[rng.integers(0, n_random, n_copies)])
    for row in bits:
        row[rng.choice(96, int(rng.integers(0, max_flip + 1)), replace=False)] ^= 1
    out = np.vstack([base, pack_bits(bits)])
    return out[rng.permutation(out.shape[0])]


def assert_matches(m, idx, d):
    np.testing.assert_array_equal(m.indices, idx)
    np.testing.assert_array_equal(m.distances, d)
    assert m.indices.dtype == np.int64 and m.distances.dtype == np.uint8


def assert_pairs(p: Pairs, i, j, d):
    np.testing.assert_array_equal(p.i, i)
    np.testing.assert_array_equal(p.j, j)
    np.testing.assert_array_equal(p.distance, d)


# ---------------------------------------------------------------- packing


def test_bit_zero_is_the_first_and_most_significant():
    one = "8" + "0" * 23
    zero = "0" * 24
    packed = pack_hex([one, zero])
    assert packed.shape == (2, 12) and packed.dtype == np.uint8
    assert packed[0, 0] == 0x80 and not packed[0, 1:].any()
    bits = unpack_bits(packed)
    assert bits[0, 0] == 1 and bits[0].sum() == 1
    hi, lo = to_words(packed)
    assert hi[0] == 1 << 63 and lo[0] == 0
    index = HashIndex(packed)
    assert index.distances(zero).tolist() == [1, 0]
    # bit 95 is the last hex digit's lowest bit
    last = pack_hex(["0" * 23 + "1"])
    assert unpack_bits(last)[0, 95] == 1 and to_words(last)[1][0] == 1


def test_round_trips():
    rng = np.random.default_rng(0)
    packed = rng.integers(0, 256, (500, 12), dtype=np.uint8)
    hexes = unpack_hex(packed)
    assert all(len(h) == 24 and h == h.lower() for h in hexes)
    assert hexes[0] == packed[0].tobytes().hex()
    np.testing.assert_array_equal(pack_hex(hexes), packed)
    np.testing.assert_array_equal(pack_hex(h.upper() for h in hexes), packed)
    np.testing.assert_array_equal(from_words(*to_words(packed)), packed)
    np.testing.assert_array_equal(pack_bits(unpack_bits(packed)), packed)
    hi, lo = to_words(packed)
    assert int(hi[7]) == int(hexes[7][:16], 16) and int(lo[7]) == int(hexes[7][16:], 16)
    assert pack_hex([]).shape == (0, 12) and unpack_hex(pack_hex([])) == []
    np.testing.assert_array_equal(HashIndex(packed).packed(), packed)


@pytest.mark.parametrize("bad, index", [
    (["0" * 24, "0" * 23], 1),
    (["0" * 24, "0" * 24, "0" * 25], 2),
    (["0" * 23 + "g", "0" * 24], 0),
    (["0" * 24, " " + "0" * 23], 1),
    (["0" * 24, "0" * 23 + "é"], 1),
    (["0" * 24, None], 1),
    (["0" * 24, b"\x00" * 12], 1),
])
def test_invalid_hex_names_index_and_value(bad, index):
    with pytest.raises(NeuralHashError) as err:
        pack_hex(bad)
    assert f"hash {index}:" in str(err.value) and repr(bad[index]) in str(err.value)


def test_invalid_inputs():
    with pytest.raises(NeuralHashError, match="single string"):
        pack_hex("0" * 24)
    with pytest.raises(NeuralHashError, match="shape"):
        HashIndex(np.zeros((3, 11), np.uint8))
    with pytest.raises(NeuralHashError, match="dtype"):
        HashIndex(np.zeros((3, 12), np.int64))
    with pytest.raises(NeuralHashError, match="ids"):
        HashIndex(np.zeros((3, 12), np.uint8), ids=[1, 2])
    with pytest.raises(NeuralHashError, match="block_bits"):
        HashIndex(np.zeros((3, 12), np.uint8), block_bits=33)
    index = HashIndex(np.zeros((3, 12), np.uint8))
    for r in (-1, 97, 2.5, True, "4"):
        with pytest.raises(NeuralHashError, match="max_distance"):
            index.query("0" * 24, r)
    with pytest.raises(NeuralHashError, match="method"):
        index.query("0" * 24, 1, method="fast")
    with pytest.raises(NeuralHashError, match="one hash"):
        index.query(np.zeros((2, 12), np.uint8), 1)
    with pytest.raises(NeuralHashError, match="12 bytes"):
        index.query(b"\x00" * 11, 1)
    with pytest.raises(NeuralHashError, match="hash 0"):
        index.query("xyz", 1)
    with pytest.raises(NeuralHashError, match="bits"):
        pack_bits(np.full((1, 96), 2))
    with pytest.raises(NeuralHashError, match="range"):
        connected_components((np.array([0]), np.array([5])), 3)


def test_block_layout():
    assert block_layout(16) == [(0, 16), (16, 16), (32, 16), (48, 16), (64, 16), (80, 16)]
    assert block_layout(20) == [(0, 20), (20, 19), (39, 19), (58, 19), (77, 19)]
    for b in range(1, 33):
        layout = block_layout(b)
        assert sum(w for _, w in layout) == 96 and max(w for _, w in layout) <= b


# ---------------------------------------------------------------- queries and self-join


def check_all(packed: np.ndarray, radii, block_sizes, rng, n_queries=6):
    n = packed.shape[0]
    queries = packed[rng.integers(0, n, n_queries)] if n else np.zeros((0, 12), np.uint8)
    # also queries that are near (not equal to) stored hashes, and unrelated ones
    if n:
        near = unpack_bits(queries.copy())
        near[:, rng.integers(0, 96, n_queries)] ^= 1
        queries = np.vstack([queries, pack_bits(near)])
    queries = np.vstack([queries, rng.integers(0, 256, (2, 12), dtype=np.uint8)])
    expected_q = {(k, r): ref_query(packed, queries[k], r) for k in range(len(queries)) for r in radii}
    ref_p = {}
    dist = ref_dist_matrix(packed) if n <= 400 else None
    for bb in block_sizes:
        index = HashIndex(packed, block_bits=bb, ids=np.arange(n) * 10)
        for r in radii:
            for method in ("index", "brute", "auto"):
                batch = index.query_many(queries, r, method=method)
                assert batch.n_queries == len(queries)
                for k in range(len(queries)):
                    idx, d = expected_q[k, r]
                    m = batch.for_query(k)
                    assert_matches(m, idx, d)
                    np.testing.assert_array_equal(m.ids, idx * 10)
                assert_matches(index.query(queries[0], r, method=method), *expected_q[0, r])
            assert_matches(index.brute_force(queries[-1], r), *expected_q[len(queries) - 1, r])
            if n <= 400:
                if r not in ref_p:
                    ref_p[r] = ref_pairs(dist, r)
                for method in ("index", "brute", "auto"):
                    assert_pairs(index.self_join(r, method=method), *ref_p[r])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_random=st.integers(0, 250), n_copies=st.integers(0, 150),
       block_bits=st.sampled_from(BLOCK_SIZES))
def test_property_planted_near_duplicates_match_reference(seed, n_random, n_copies, block_bits):
    rng = np.random.default_rng(seed)
    packed = planted(rng, n_random, n_copies)
    check_all(packed, range(0, 11), (block_bits,), rng, n_queries=3)


@pytest.mark.parametrize("block_bits", BLOCK_SIZES + (None,))
def test_planted_larger_set(block_bits):
    rng = np.random.default_rng(7)
    packed = planted(rng, 3000, 1500)
    index = HashIndex(packed, block_bits=block_bits)
    queries = packed[rng.integers(0, len(packed), 40)]
    for r in (0, 2, 4, 7, 10):
        a = index.query_many(queries, r, method="brute")
        b = index.query_many(queries, r, method="index")
        for k in (0, 17, 39):
            assert_matches(a.for_query(k), *ref_query(packed, queries[k], r))
        for field in ("query", "index", "distance"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        pb, pi = index.self_join(r, method="brute"), index.self_join(r, method="index")
        assert len(pb) > 0 or r == 0
        assert_pairs(pi, pb.i, pb.j, pb.distance)
        assert (pb.i < pb.j).all()


def test_self_join_small_chunks_and_skewed_buckets(monkeypatch):
    """Tiny chunk budgets and one huge bucket (many hashes equal on most bits)."""
    import neuralhash.matching.index as mod

    monkeypatch.setattr(mod, "_PAIR_BUDGET", 37)
    monkeypatch.setattr(mod, "_KEY_BUDGET", 5)
    rng = np.random.default_rng(3)
    bits = np.zeros((300, 96), np.uint8)
    for row in bits:
        row[rng.choice(96, int(rng.integers(0, 9)), replace=False)] = 1
    packed = np.vstack([pack_bits(bits), planted(rng, 80, 40)])
    check_all(packed, (0, 1, 4, 8, 10), (8, 16, 32), rng)


def test_edge_cases():
    rng = np.random.default_rng(5)
    empty = HashIndex(np.zeros((0, 12), np.uint8))
    assert len(empty) == 0
    for method in ("index", "brute", "auto"):
        assert len(empty.query("0" * 24, 4, method=method)) == 0
        assert len(empty.self_join(4, method=method)) == 0
    assert len(empty.query_many([], 3)) == 0
    assert connected_components(empty.self_join(3), 0).shape == (0,)

    one = HashIndex(pack_hex(["0123456789abcdef01234567"]), ids=["a"])
    m = one.query("0123456789abcdef01234567", 0, method="index")
    assert list(m) == [(0, 0)] and m.ids.tolist() == ["a"]
    assert len(one.query("f123456789abcdef01234567", 0)) == 0
    assert len(one.self_join(96)) == 0

    dup = np.repeat(rng.integers(0, 256, (1, 12), dtype=np.uint8), 5, axis=0)
    packed = np.vstack([dup, rng.integers(0, 256, (20, 12), dtype=np.uint8), dup[:2]])
    check_all(packed, (0, 1, 96), BLOCK_SIZES, rng)
    pairs = HashIndex(packed).self_join(0)
    assert len(pairs) == 21  # 7 equal hashes -> 7*6/2 pairs (random ones differ)
    assert set(pairs.distance.tolist()) == {0}

    # radius 96 matches everything, in index order (all at their own distance)
    index = HashIndex(packed)
    for method in ("index", "brute"):
        m = index.query(packed[3], 96, method=method)
        assert len(m) == len(packed)
        assert_matches(m, *ref_query(packed, packed[3], 96))
        assert len(index.self_join(96, method=method)) == len(packed) * (len(packed) - 1) // 2


def test_query_input_forms_and_batch_layout():
    rng = np.random.default_rng(9)
    packed = planted(rng, 200, 100)
    index = HashIndex(packed)
    hexes = unpack_hex(packed[:4])
    a = index.query(hexes[1], 6)
    assert_matches(index.query(packed[1].tobytes(), 6), a.indices, a.distances)
    assert_matches(index.query(packed[1], 6), a.indices, a.distances)
    batch = index.query_many(hexes, 6)
    np.testing.assert_array_equal(batch.for_query(1).indices, a.indices)
    assert [len(m) for m in batch.split()] == [int((batch.query == k).sum()) for k in range(4)]
    keys = list(zip(batch.query.tolist(), batch.distance.tolist(), batch.index.tolist()))
    assert keys == sorted(keys)
    assert index.choose_method(4, 1) == "brute"  # tables not built, one query: scan
    with pytest.raises(NeuralHashError, match="out of range"):
        batch.for_query(4)


def test_auto_method_uses_index_once_it_pays():
    rng = np.random.default_rng(11)
    index = HashIndex(planted(rng, 400_000, 1000))
    assert index.choose_method(4, 1) == "brute" and not index.built
    assert index.choose_method(4, 10_000) == "index"
    index.build()
    assert index.choose_method(4, 1) == "index"
    assert index.choose_method(40, 1) == "brute"
    assert index.nbytes > 12 * len(index)


# ---------------------------------------------------------------- components


def ref_components(i, j, n):
    labels = list(range(n))

    def find(x):
        while labels[x] != x:
            x = labels[x]
        return x

    for a, b in zip(i, j):
        ra, rb = find(a), find(b)
        labels[max(ra, rb)] = min(ra, rb)
    return np.array([find(x) for x in range(n)])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), edges=st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59)), max_size=80))
def test_connected_components_match_reference(n, edges):
    edges = [(a % n, b % n) for a, b in edges]
    i = np.array([a for a, _ in edges], dtype=np.int64)
    j = np.array([b for _, b in edges], dtype=np.int64)
    labels = connected_components((i, j), n)
    np.testing.assert_array_equal(labels, ref_components(i.tolist(), j.tolist(), n))
    groups = component_groups(labels)
    assert sorted(int(x) for g in groups for x in g) == sorted(
        x for x in range(n) if (labels == labels[x]).sum() >= 2)


def test_components_of_self_join():
    rng = np.random.default_rng(13)
    packed = planted(rng, 300, 200, max_flip=3)
    index = HashIndex(packed)
    pairs = index.self_join(3)
    labels = connected_components(pairs, len(index))
    np.testing.assert_array_equal(labels, connected_components(np.stack([pairs.i, pairs.j], 1), len(index)))
    assert (labels[pairs.i] == labels[pairs.j]).all()
    assert (labels <= np.arange(len(index))).all()
    groups = component_groups(labels)
    assert groups and all(len(g) >= 2 and (np.diff(g) > 0).all() for g in groups)
    # a long chain needs many hooking rounds
    n = 1000
    order = rng.permutation(n)
    labels = connected_components((order[:-1], order[1:]), n)
    assert (labels == 0).all()


@pytest.mark.parametrize("budget", [1, 37, 1000])
def test_self_join_and_components_in_small_chunks_match_the_reference(monkeypatch, budget):
    """With a tiny pair budget every chunking path (bucket slices, pair chunks, folds) is taken."""
    import neuralhash.matching.index as index_mod

    monkeypatch.setattr(index_mod, "_PAIR_BUDGET", budget)
    rng = np.random.default_rng(budget)
    packed = planted(rng, 400, 300, max_flip=6)
    packed = np.vstack([packed, np.repeat(packed[:1], 30, axis=0)])  # one big bucket of equal hashes
    dist = ref_dist_matrix(packed)
    for r in (0, 3, 6, 30):
        i, j, d = ref_pairs(dist, r)
        for method in ("index", "brute"):
            idx = HashIndex(packed, block_bits=8)
            assert_pairs(idx.self_join(r, method=method), i, j, d)
            labels = idx.components(r, method=method)
            np.testing.assert_array_equal(labels, connected_components((i, j), packed.shape[0]))
