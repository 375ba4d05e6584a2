"""Imports over HTTP: one import never replaces another's entries by accident (issue 18 item 1),
and an import that brings nothing is refused, not an empty list (item 7)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from neuralhash.hashing import NeuralHash  # noqa: E402
from neuralhash.service import ServeConfig, create_app  # noqa: E402


@pytest.fixture(scope="module")
def nh(module_env):
    return NeuralHash.demo()


@pytest.fixture()
def client(tmp_path, nh):
    with TestClient(create_app(ServeConfig(db=str(tmp_path / "h.db"), model=nh, workers=0))) as c:
        yield c


def tx_file(digests: list[bytes]) -> bytes:
    """threatexchange's `neuralhash HEX` lines: entries without names."""
    return b"".join(b"neuralhash %s\n" % d.hex().encode() for d in digests)


def digests(n: int, seed: int) -> list[bytes]:
    return [bytes(r) for r in np.random.default_rng(seed).integers(0, 256, (n, 12), dtype=np.uint8)]


def exported(client, name: str) -> list[str]:
    return sorted(line.split()[0] for line in client.get(f"/lists/{name}/export").text.splitlines())


def test_two_raw_imports_of_unnamed_entries_keep_both(client):
    a, b = digests(2, 1), digests(2, 2)
    first = client.post("/lists/l/import", content=tx_file(a)).json()
    second = client.post("/lists/l/import", content=tx_file(b)).json()
    assert (first["imported"], first["replaced"]) == (2, 0)
    assert (second["imported"], second["replaced"]) == (2, 0), second
    assert first["source"] != second["source"]
    assert exported(client, "l") == sorted(d.hex() for d in a + b)


def test_multipart_imports_are_named_after_their_files(client):
    a, b = digests(2, 3), digests(2, 4)
    client.post("/lists/m/import", files={"file": ("txA.txt", tx_file(a), "text/plain")})
    r = client.post("/lists/m/import", files={"file": ("txB.txt", tx_file(b), "text/plain")}).json()
    assert (r["source"], r["imported"], r["replaced"]) == ("txB.txt", 2, 0)
    labels = sorted(line.split(None, 1)[1] for line in client.get("/lists/m/export").text.splitlines())
    assert labels == ["txA.txt:1", "txA.txt:2", "txB.txt:1", "txB.txt:2"]


def test_replacing_is_what_the_client_asks_for(client):
    a, b = digests(2, 5), digests(2, 6)
    client.post("/lists/r/import?source=feed", content=tx_file(a))
    r = client.post("/lists/r/import?source=feed", content=tx_file(b)).json()  # the same source, again
    assert (r["imported"], r["replaced"]) == (2, 2)
    assert exported(client, "r") == sorted(d.hex() for d in b)


@pytest.mark.parametrize("body", [b"not-a-hash  x\nzz\n", b""])
def test_an_import_without_one_valid_entry_is_refused_and_creates_no_list(client, body):
    r = client.post("/lists/nothing/import", content=body)
    assert r.status_code == 422 and "no valid entry" in r.json()["error"], r.text
    assert client.get("/lists/nothing").status_code == 404
    assert [s["name"] for s in client.get("/lists").json()] == []


def test_one_file_per_import_and_per_hash(client, nh):
    two = [("file", ("a.txt", tx_file(digests(1, 7)), "text/plain")),
           ("file", ("b.txt", tx_file(digests(1, 8)), "text/plain"))]
    r = client.post("/lists/two/import", files=two)
    assert r.status_code == 422 and "one file per request, got 2" in r.json()["error"]
    assert client.get("/lists/two").status_code == 404
    import io

    from conftest import draw_shapes

    def png(seed):
        buf = io.BytesIO()
        draw_shapes(96, 72, seed=seed).save(buf, format="PNG")
        return buf.getvalue()

    r = client.post("/hash", files=[("image", ("a.png", png(1), "image/png")), ("image", ("b.png", png(2), "image/png"))])
    assert r.status_code == 422 and "/match" in r.json()["error"]


def test_lookup_with_an_empty_selection_of_lists_is_refused(client):
    client.post("/lists/l/hashes", json={"hashes": [{"hash": "00" * 12, "path": "z"}]})
    r = client.post("/lookup", json={"hashes": ["00" * 12], "max_distance": 0, "lists": []})
    assert r.status_code == 422 and "empty selection" in r.json()["error"]


def test_match_takes_as_many_files_as_it_documents(client, nh):
    client.post("/lists/l/hashes", json={"hashes": [{"hash": "00" * 12, "path": "z"}]})
    n = 1200  # more than the multipart parser's default of 1,000
    files = [("images", (f"i{k}.png", b"not an image", "image/png")) for k in range(n)]
    r = client.post("/match", data={"max_distance": "0", "hashes": "00" * 12}, files=files)
    assert r.status_code == 200, r.text[:300]
    results = r.json()["results"]
    assert len(results) == n + 1 and all("error" in x for x in results[:n])
    assert results[n]["matches"][0]["path"] == "z"
    r = client.post("/match", data={"max_distance": "0", "hashes": ",".join(["00" * 12] * 10_001)})
    assert r.status_code == 422 and "at most 10000 queries" in r.json()["error"]


def test_a_large_import_runs_in_a_child_process_and_loses_nothing(client, monkeypatch):
    """Parsing millions of lines holds the GIL: a large body is imported by a child process, with the
    same report and the same rows as in the server's own writer thread."""
    from neuralhash.service import importer

    ran = []
    real = importer.ChildImport.run

    def spy(self):
        ran.append(self.path)
        return real(self)

    monkeypatch.setattr(importer.ChildImport, "run", spy)
    ds = digests(40_000, 9)
    body = b"".join(b"%s  n%d\n" % (d.hex().encode(), i) for i, d in enumerate(ds)) + b"bad line\n"
    assert len(body) >= importer.CHILD_IMPORT_BYTES
    r = client.post("/lists/big/import", content=body)
    assert r.status_code == 200, r.text
    assert (r.json()["imported"], [s["line"] for s in r.json()["skipped"]]) == (40_000, [40_001])
    assert len(ran) == 1
    found = client.post("/lookup", json={"hashes": [ds[-1].hex(), ds[0].hex()], "max_distance": 0}).json()
    assert [[m["path"] for m in x["matches"]] for x in found["results"]] == [["n39999"], ["n0"]]
    bad = client.post("/lists/worse/import", content=b"not a hash\n" * 120_000)  # nothing valid: refused
    assert bad.status_code == 422 and "no valid entry" in bad.json()["error"] and len(ran) == 2
    assert client.get("/lists/worse").status_code == 404
