"""NeuralHashIndex as Hasher-Matcher-Actioner uses it: built by ``build([(signal, content id), ...])``,
serialized with the base class's ``serialize`` and loaded with ``SignalTypeIndex.deserialize`` (HMA never
calls a subclass's, docs/hma.md), queried by matchers. Checked against a linear scan of the same entries."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

pytest.importorskip("threatexchange")

from threatexchange.signal_type.index import SignalTypeIndex  # noqa: E402

from neuralhash.integrations import threatexchange as ext  # noqa: E402


def _flip(hex_text: str, bits) -> str:
    value = int(hex_text, 16)
    for b in bits:
        value ^= 1 << (95 - b)
    return f"{value:024x}"


@pytest.fixture(scope="module")
def entries():
    rng = np.random.default_rng(5)
    base = [bytes(b).hex() for b in rng.integers(0, 256, (4000, 12), dtype=np.uint8)]
    out = [(h, i + 1) for i, h in enumerate(base)]
    out += [(_flip(base[i], range(i % 11)), 100_000 + i) for i in range(0, 400, 4)]  # 0..10 bits away
    out += [(base[7], 7_000_000)]  # a second entry with the same hash
    return out


def _scan(entries, query, limit=ext.DEFAULT_THRESHOLD):
    return sorted((ext.hamming(h, query), e) for h, e in entries if ext.hamming(h, query) <= limit)


def _got(index, query):
    return sorted((m.similarity_info.distance, m.metadata) for m in index.query(query))


def _queries(entries):
    return [entries[k][0] for k in (0, 7, 8, 44, 3999)] + [_flip(entries[12][0], [3, 40, 77]), "0" * 24]


def test_content_ids_come_back_exactly_as_a_linear_scan_finds_them(entries):
    index = ext.NeuralHashIndex.build(entries)
    assert len(index) == len(entries)
    assert isinstance(index._entries, np.ndarray) and index._entries.dtype == np.int32
    for q in _queries(entries):
        assert _got(index, q) == _scan(entries, q)
    assert _got(index, entries[7][0])[:2] == [(0, 8), (0, 7_000_000)]
    assert all(type(m.metadata) is int for m in index.query(entries[7][0]))  # plain ints, as HMA expects


def test_hma_round_trip_through_the_base_class_is_compact_and_ready(entries):
    index = ext.NeuralHashIndex.build(entries)
    buf = io.BytesIO()
    index.serialize(buf)
    assert len(buf.getvalue()) < 16 * len(entries) + 1000  # 12 bytes a hash, 4 an id
    loaded = SignalTypeIndex.deserialize(io.BytesIO(buf.getvalue()))
    assert type(loaded) is ext.NeuralHashIndex and loaded.threshold == index.threshold
    assert loaded._search is not None and loaded._search.built  # tables built while loading
    for q in _queries(entries):
        assert _got(loaded, q) == _scan(entries, q)


def test_building_in_chunks_adding_one_by_one_and_mixed_entries_agree(entries, monkeypatch):
    monkeypatch.setattr(ext.NeuralHashIndex, "CHUNK", 999)
    chunked = ext.NeuralHashIndex.build(entries)
    single = ext.NeuralHashIndex()
    for h, e in entries[:50]:
        single.add(h.upper(), e)
    single.add_all(entries[50:])
    big = ext.NeuralHashIndex.build([(h, e + 2**40) for h, e in entries])  # ids beyond int32
    mixed = ext.NeuralHashIndex.build(entries[:-1] + [(entries[-1][0], ("meta", 1))])  # not all ints: a list
    assert big._entries.dtype == np.int64 and isinstance(mixed._entries, list)
    for q in _queries(entries):
        want = _scan(entries, q)
        assert _got(chunked, q) == want and _got(single, q) == want
        assert _got(big, q) == sorted((d, e + 2**40) for d, e in want)
        assert sorted(m.similarity_info.distance for m in mixed.query(q)) == [d for d, _ in want]


def test_bad_signals_and_old_pickles_are_one_line_errors(entries):
    with pytest.raises(ValueError, match="invalid NeuralHash 'zz'"):
        ext.NeuralHashIndex.build(entries[:10] + [("zz", 1)])
    with pytest.raises(ValueError, match="24 hex digits"):
        ext.NeuralHashIndex.build(entries[:3]).query("12")
    old = pickle.dumps({"threshold": 8, "_hashes": ["00" * 12]})
    state = pickle.loads(old)
    blank = ext.NeuralHashIndex.__new__(ext.NeuralHashIndex)
    with pytest.raises(ext.NeuralHashSignalError, match="build it again"):
        blank.__setstate__(state)
    assert ext.NeuralHashIndex.build([]).query(entries[0][0]) == []
