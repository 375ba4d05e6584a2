"""neuralhash audit: every finding checked against brute force on small lists, and the CLI's contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from neuralhash.lists.audit import (
    IMBALANCE,
    _poisson_sf_limit,
    _poisson_upper95,
    audit,
    hash_list_from_hex,
    read_hash_list,
    read_reference,
)
from neuralhash.cli import main
from neuralhash.matching import pack_hex


def _random_hex(rng, n: int) -> list[str]:
    return [bytes(b).hex() for b in rng.integers(0, 256, (n, 12), dtype=np.uint8)]


def _flip(hex_text: str, bits) -> str:
    value = int(hex_text, 16)
    for b in bits:
        value ^= 1 << (95 - b)
    return f"{value:024x}"


def _distance_matrix(a: list[str], b: list[str]) -> np.ndarray:
    pa, pb = np.unpackbits(pack_hex(a), axis=1), np.unpackbits(pack_hex(b), axis=1)
    return (pa[:, None, :] != pb[None, :, :]).sum(axis=2)


@pytest.fixture
def planted(tmp_path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(7)
    hexes = _random_hex(rng, 300)
    # Near-duplicates at 1..5 bits of entries 10..14 (5 bits is outside radius 4).
    for k, d in enumerate(range(1, 6)):
        hexes.append(_flip(hexes[10 + k], range(d)))
    hexes += [hexes[20], hexes[20], hexes[21]]                 # exact duplicates
    hexes += ["0" * 24, "F" * 24, _flip("0" * 24, range(IMBALANCE)), _flip("0" * 24, range(IMBALANCE + 1))]
    lines = [f"{h}  photos/img {i}.jpg" for i, h in enumerate(hexes)]
    lines.insert(5, "# a comment")
    lines.insert(50, "not-a-hash  broken.jpg")
    lines.insert(60, "0123456789abcdef01234567890  too-long.jpg")
    path = tmp_path / "list.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, hexes


def test_list_findings_equal_brute_force(planted):
    path, hexes = planted
    hl = read_hash_list(path)
    assert len(hl) == len(hexes)
    rep = audit(hl, max_distance=4, limit=1000)
    assert rep.entries == len(hexes)
    assert [line for line, _ in rep.malformed] == [51, 61]
    assert rep.malformed_count == 2

    ones = np.unpackbits(pack_hex(hexes), axis=1).sum(axis=1)
    expect_degenerate = np.flatnonzero(np.minimum(ones, 96 - ones) <= IMBALANCE)
    assert [d.entry.hash for d in rep.degenerate] == [hexes[i].lower() for i in expect_degenerate]
    assert rep.degenerate_count == 3  # all-zero, all-one, 14 bits set; not 15
    assert rep.degenerate[0].entry.label == f"photos/img {expect_degenerate[0]}.jpg"

    lower = [h.lower() for h in hexes]
    assert rep.distinct == len(set(lower))
    dup = sorted(h for h in set(lower) if lower.count(h) > 1)
    assert sorted(g.entries[0].hash for g in rep.exact_duplicates) == dup
    assert rep.exact_duplicate_entries == sum(lower.count(h) for h in dup)

    # Near duplicates: entries with a *different*, non-degenerate hash within 4 bits.
    d = _distance_matrix(lower, lower)
    ok = np.minimum(ones, 96 - ones) > IMBALANCE
    close = (d <= 4) & (d > 0) & ok[:, None] & ok[None, :]
    expect = {lower[i] for i in np.flatnonzero(close.any(axis=1))}
    got = {e.hash for g in rep.near_duplicates for e in g.entries}
    assert got == expect
    assert rep.near_groups_count == 4  # the 1..4-bit plants; 5 bits is outside
    for g in rep.near_duplicates:
        idx = [lower.index(e.hash) for e in g.entries]
        assert g.distance == d[np.ix_(idx, idx)].max()
    assert rep.flagged


def test_a_clean_list_is_not_flagged():
    rep = audit(hash_list_from_hex(_random_hex(np.random.default_rng(1), 2000)), max_distance=4)
    assert not rep.flagged
    assert rep.near_groups_count == rep.exact_groups_count == rep.degenerate_count == 0


def test_reference_checks_equal_brute_force():
    rng = np.random.default_rng(3)
    entries = _random_hex(rng, 40)
    reference = _random_hex(rng, 1500)
    # Entry 0 sits within 3 bits of 12 reference hashes: over-broad. Entry 1 has one copy.
    reference += [_flip(entries[0], [b, b + 40, b + 80]) for b in range(12)]
    reference.append(_flip(entries[1], [5]))
    # A few near pairs inside the reference give chance a non-zero estimate.
    reference += [_flip(reference[k], [k % 96, (k + 30) % 96]) for k in range(30)]
    r = 6
    rep = audit(hash_list_from_hex(entries), pack_hex(reference), max_distance=r, limit=50)

    uniq_ref = sorted(set(reference))
    d_ref = _distance_matrix(uniq_ref, uniq_ref)
    m = len(uniq_ref)
    within = int(((d_ref <= r).sum() - m) // 2)
    total = m * (m - 1) // 2
    fm = rep.false_matches
    assert (fm.pairs, fm.pairs_within) == (total, within)
    p = within / total
    assert math.isclose(fm.p_pair, p, rel_tol=1e-12)
    assert math.isclose(fm.per_million, 1e6 * (1 - (1 - p) ** len(set(entries))), rel_tol=1e-9)
    assert fm.p_pair_upper95 > p

    d = _distance_matrix(entries, reference)
    counts = (d <= r).sum(axis=1)
    assert rep.reference_matched == int((d <= r).any(axis=0).sum())
    lam = len(reference) * p
    assert math.isclose(rep.broad_expected, lam, rel_tol=1e-12)
    expect = [entries[i] for i in np.flatnonzero(counts >= rep.broad_limit)]
    assert [b.entry.hash for b in rep.broad] == expect == [entries[0]]
    assert rep.broad[0].reference_matches == counts[0] >= 12
    # The single genuine copy is not flagged.
    assert counts[1] >= 1 and rep.broad_limit > counts[1]


def test_poisson_helpers_against_tables():
    # One-sided 95% upper limits of a Poisson mean (standard tables).
    for k, want in [(0, 2.996), (1, 4.744), (2, 6.296), (5, 10.513), (10, 16.962)]:
        assert math.isclose(_poisson_upper95(k), want, rel_tol=2e-4), k
    # P(X >= k) < 1e-9 for X ~ Poisson(1): P(X >= 13) = 2.1e-10 > ... check by direct summation.
    lam = 1.0
    k = _poisson_sf_limit(lam, 1e-9)
    tail = lambda k: 1 - sum(math.exp(-lam) * lam**i / math.factorial(i) for i in range(k))  # noqa: E731
    assert tail(k) < 1e-9 <= tail(k - 1)


def test_reference_from_a_database(tmp_path, planted):
    from neuralhash.store import HashStore

    path, hexes = planted
    db = tmp_path / "ref.db"
    with HashStore(db, create=True) as store:
        store.import_file(path, list_name="published", model_id="apple")
    ref = read_reference(db)
    assert sorted(bytes(r).hex() for r in ref) == sorted(h.lower() for h in hexes)  # one row a path
    with HashStore(db, create=True) as store:
        store.import_file(path, list_name="partner", model_id="other")
    with pytest.raises(Exception, match="several models"):
        read_reference(db)
    assert len(read_reference(db, model_id="other")) == len(ref)


def test_cli_text_json_and_exit_codes(tmp_path, planted, capsys):
    path, hexes = planted
    assert main(["audit", str(path)]) == 1
    text = capsys.readouterr().out
    assert "malformed entries: 2" in text and "line 51: not a 96-bit hash" in text
    assert "FLAGGED" in text
    assert main(["audit", str(path), "--json", "--limit", "1"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["flagged"] is True
    assert data["degenerate_count"] == 3 and len(data["degenerate"]) == 1
    assert data["near_groups_count"] == 4 and len(data["near_duplicates"]) == 1

    clean = tmp_path / "clean.csv"
    rows = _random_hex(np.random.default_rng(5), 100)
    clean.write_text("hash,path,label\n" + "".join(f"{h},p{i}.jpg,x\n" for i, h in enumerate(rows)))
    ref = tmp_path / "ref.txt"
    ref.write_text("".join(h + "\n" for h in _random_hex(np.random.default_rng(6), 500)))
    assert main(["audit", str(clean), "--reference", str(ref), "--max-distance", "3"]) == 0
    out = capsys.readouterr().out
    assert "nothing flagged" in out and "expected false matches per million images at 3 bits: 0 " in out


def test_cli_unreadable_input_is_one_line(tmp_path, capsys):
    target = tmp_path / "list.txt"
    target.mkdir()
    assert main(["audit", str(target)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(target) in err[0] and "Traceback" not in err[0]


def test_cli_binary_garbage_is_a_malformed_entry(tmp_path, capsys):
    # Read as index import reads it (neuralhash.lists.hashlists): undecodable bytes are a malformed line, not a crash.
    target = tmp_path / "list.txt"
    target.write_bytes(b"\xff\xfe\x00garbage\x80")
    assert main(["audit", str(target)]) == 1
    captured = capsys.readouterr()
    assert "malformed entries: 1" in captured.out and "line 1:" in captured.out
    assert "Traceback" not in captured.err


def test_cli_bad_reference_is_one_line(tmp_path, planted, capsys):
    path, _ = planted
    ref = tmp_path / "ref.txt"
    ref.write_text("zz\n")
    assert main(["audit", str(path), "--reference", str(ref)]) == 1
    err = capsys.readouterr().err
    assert "reference line 1" in err and len(err.strip().splitlines()) == 1


def test_a_hostile_list_of_near_blank_hashes_stays_cheap():
    # 4,656 distinct hashes of at most 2 set bits: all within 4 bits of one another (10.8 million
    # pairs). They are degenerate, flagged as such, and kept out of the near-duplicate join.
    blank = "0" * 24
    hexes = [_flip(blank, [a, b]) for a in range(96) for b in range(a + 1, 96)] + \
            [_flip(blank, [a]) for a in range(96)]
    hexes += _random_hex(np.random.default_rng(9), 1000)
    rep = audit(hash_list_from_hex(hexes), hash_list_from_hex(hexes[:10]).packed, max_distance=4, limit=5)
    assert rep.degenerate_count == 96 * 95 // 2 + 96
    assert rep.near_groups_count == 0 and rep.broad_count == 0
    assert len(rep.degenerate) == 5
