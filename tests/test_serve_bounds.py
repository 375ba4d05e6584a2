"""What one request may take is bounded, and an answer that was cut says so (issue 18 items 3 and 6).

Expectations come from a brute-force popcount over the hashes the test stored."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from neuralhash.service import ServeConfig, create_app  # noqa: E402
from neuralhash.service import app as app_module  # noqa: E402
from neuralhash.service import backend as backend_module  # noqa: E402

MODEL = "m" * 16


@pytest.fixture()
def stored(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (40, 12), dtype=np.uint8)
    # 40 clusters of 30 hashes each within a few bits of its centre: every centre query has 30 matches at 8.
    rows = []
    for c, centre in enumerate(base):
        bits = np.unpackbits(centre)
        for k in range(30):
            b = bits.copy()
            b[rng.choice(96, size=k % 5, replace=False)] ^= 1
            rows.append((f"c{c}-{k}", np.packbits(b).tobytes()))
    with TestClient(create_app(ServeConfig(db=str(tmp_path / "h.db")))) as client:
        for a in range(0, len(rows), 500):
            r = client.post("/lists/l/hashes", json={"model_id": MODEL, "hashes": [
                {"hash": d.hex(), "path": p} for p, d in rows[a:a + 500]]})
            assert r.status_code == 200, r.text
        yield client, base, rows


def expected(rows, query: bytes, r: int) -> list[tuple[int, str]]:
    q = np.unpackbits(np.frombuffer(query, np.uint8))
    out = []
    for p, d in rows:
        dist = int((np.unpackbits(np.frombuffer(d, np.uint8)) != q).sum())
        if dist <= r:
            out.append((dist, p))
    return sorted(out, key=lambda t: t[0])


def lookup(client, base, **extra):
    body = {"hashes": [bytes(c).hex() for c in base], "max_distance": 8, **extra}
    r = client.post("/lookup", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_query_cut_by_its_limit_says_so(stored):
    client, base, rows = stored
    got = lookup(client, base, limit=10)
    assert got["complete"] is True and got["note"] is None  # the request itself was not cut
    for res, centre in zip(got["results"], base):
        want = expected(rows, bytes(centre), 8)
        assert len(want) == 30
        assert [m["distance"] for m in res["matches"]] == [d for d, _ in want[:10]]
        assert res["complete"] is False
    full = lookup(client, base, limit=30)
    assert all(res["complete"] for res in full["results"])
    assert all(sorted(m["path"] for m in res["matches"]) == sorted(p for _, p in expected(rows, bytes(c), 8))
               for res, c in zip(full["results"], base))


def test_the_answer_stops_at_its_result_bound_and_says_where(stored, monkeypatch):
    client, base, rows = stored
    monkeypatch.setattr(app_module, "MAX_RESULTS", 100)  # 30 a query: the 4th query is cut
    got = lookup(client, base, limit=30)
    res = got["results"]
    assert got["complete"] is False and "100 matches" in got["note"] and repr(bytes(base[3]).hex()) in got["note"]
    assert [len(r["matches"]) for r in res[:4]] == [30, 30, 30, 10]
    assert [r["complete"] for r in res[:4]] == [True, True, True, False]
    assert all(r["searched"] is False and r["matches"] == [] and not r["complete"] for r in res[4:])
    assert len(res) == len(base)  # every query is accounted for
    assert sum(len(r["matches"]) for r in res) == 100


def test_the_time_bound_leaves_the_rest_unsearched_and_says_so(stored, monkeypatch):
    client, base, rows = stored
    monkeypatch.setattr(app_module, "MAX_REQUEST_SECONDS", 0.0)
    monkeypatch.setattr(backend_module, "CHUNK", 16)
    got = lookup(client, base, limit=30)
    res = got["results"]
    assert got["complete"] is False and "time limit" in got["note"]
    assert all(r["complete"] for r in res[:16])  # the first chunk is searched before the answer starts
    assert all(r["searched"] is False for r in res[16:])


def test_heavy_lookups_in_their_thread_answer_the_same(stored, monkeypatch):
    client, base, rows = stored
    light = lookup(client, base, limit=30)
    monkeypatch.setattr(backend_module, "HEAVY_NS", -1)  # every chunk is "heavy"
    heavy = lookup(client, base, limit=30)
    assert heavy == light
