"""The HTTP service in process (Starlette's TestClient): hashing, matching, lists, errors, the token.

Expectations are independent of the service: hashes from ``NeuralHash.hash`` on
the same bytes, matches from a brute-force popcount over the hashes the test
stored, list contents from what the test put in.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import threading

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import draw_shapes  # noqa: E402
from neuralhash.hashing import NeuralHash  # noqa: E402
from neuralhash.service import ServeConfig, ServiceError, create_app  # noqa: E402
from neuralhash.service.hasher import ImageHasher  # noqa: E402

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def nh(module_env):
    return NeuralHash.demo()


def png(seed: int, size=(160, 120)) -> bytes:
    buf = io.BytesIO()
    draw_shapes(*size, seed=seed).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    draw_shapes(200, 150, seed=seed).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture()
def client(tmp_path, nh):
    app = create_app(ServeConfig(db=str(tmp_path / "h.db"), model=nh, workers=1))
    with TestClient(app) as c:
        yield c


def one_line_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert "\n" not in body["error"] and body["error"]
    return body["error"]


def random_digests(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [bytes(row) for row in rng.integers(0, 256, (n, 12), dtype=np.uint8)]


def near(digest: bytes, flips: list[int]) -> bytes:
    bits = np.unpackbits(np.frombuffer(digest, np.uint8)).copy()
    bits[flips] ^= 1
    return np.packbits(bits).tobytes()


def brute_force(stored: list[tuple[str, bytes]], query: bytes, max_distance: int) -> list[tuple[int, str]]:
    """(distance, label) of every stored hash within reach: numpy popcount, no index."""
    if not stored:
        return []
    packed = np.frombuffer(b"".join(d for _, d in stored), np.uint8).reshape(-1, 12)
    q = np.frombuffer(query, np.uint8)
    dist = np.unpackbits(packed ^ q, axis=1).sum(axis=1)
    return sorted((int(dist[i]), stored[i][0]) for i in np.nonzero(dist <= max_distance)[0])


# -- hashing ------------------------------------------------------------------------------------


def test_hash_raw_and_multipart_equal_the_library(client, nh):
    for data in (png(1), jpeg(2)):
        expected = nh.hash(data)
        raw = client.post("/hash", content=data, headers={"Content-Type": "application/octet-stream"})
        multi = client.post("/hash", files={"image": ("photo.jpg", data, "image/jpeg")})
        for r in (raw, multi):
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["hash"] == expected.hex
            assert body["model_id"] == nh.model_id
            np.testing.assert_allclose(body["margins"], expected.margins, rtol=1e-5, atol=0)
            assert body["unstable_bits"] == expected.unstable_bits()
            assert body["unstable"] == [int(i) for i in np.nonzero(expected.unstable_mask())[0]]


def test_bad_uploads_are_one_line_4xx(client):
    good = png(3)
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # 400 Mpx in a few dozen kB
    cases = {
        "truncated": good[: len(good) // 2],
        "not an image": b"just some text, not an image at all\n" * 10,
        "decompression bomb": bomb.getvalue(),
        "empty": b"",
        "corrupt": jpeg(4)[:200] + bytes(range(256)) * 20,
    }
    for expected, data in cases.items():
        r = client.post("/hash", files={"image": ("bad.png", data, "image/png")})
        message = one_line_error(r, 422)
        assert "bad.png" in message, message
        if expected != "corrupt":
            assert expected in message, (expected, message)
    # The server still hashes afterwards.
    assert client.post("/hash", content=good).status_code == 200


def test_a_path_in_the_body_is_never_opened(client, tmp_path):
    image = tmp_path / "real.png"
    image.write_bytes(png(5))
    r = client.post("/hash", content=str(image).encode())
    assert "not an image" in one_line_error(r, 422)
    # A multipart file name that is a real path: the bytes sent are hashed, not the file named.
    r = client.post("/hash", files={"image": (str(image), b"plain text", "image/png")})
    assert "not an image" in one_line_error(r, 422)


class KillingHasher(ImageHasher):
    """Uploads starting with KILL make the decoding worker process exit, like a decoder crash."""

    def task(self, data: bytes):
        if data.startswith(b"KILL"):
            return functools.partial(os._exit, 3)
        return super().task(data)


def test_a_decoder_crash_fails_only_its_upload(tmp_path, nh):
    app = create_app(ServeConfig(db=str(tmp_path / "h.db"), model=nh, workers=2), hasher_class=KillingHasher)
    images = [png(10), png(11), b"KILL me", png(12)]
    with TestClient(app) as client:
        out: dict[int, object] = {}

        def send(i: int) -> None:
            out[i] = client.post("/hash", files={"image": (f"u{i}.png", images[i], "image/png")})

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(images))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, data in enumerate(images):
            if data.startswith(b"KILL"):
                assert "crashed" in one_line_error(out[i], 422)
            else:
                assert out[i].status_code == 200 and out[i].json()["hash"] == nh.hash(data).hex
        again = client.post("/hash", content=png(13))
        assert again.status_code == 200 and again.json()["hash"] == nh.hash(png(13)).hex


def test_a_non_finite_network_output_is_422_and_spares_its_batch(tmp_path):
    """A model whose output is NaN for black images only: that upload is a one-line 422, never a
    hash, and the other uploads merged into the same network batch still get theirs."""
    from conftest import tiny_brightness_onnx

    model = NeuralHash.from_onnx(tiny_brightness_onnx(tmp_path / "log.onnx", log_of_brightness=True))

    def solid(colour) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), colour).save(buf, "PNG")
        return buf.getvalue()

    black, grey = solid((0, 0, 0)), solid((128, 128, 128))
    app = create_app(ServeConfig(db=str(tmp_path / "h.db"), model=model, workers=0))
    with TestClient(app) as client:
        assert "not finite" in one_line_error(client.post("/hash", content=black), 422)
        ok = client.post("/hash", content=grey)
        assert ok.status_code == 200 and ok.json()["hash"] == model.hash(grey).hex
        # Concurrent uploads share one network batch: only the black one fails.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda body: client.post("/hash", content=body), [grey, black, grey, black]))
        assert [r.status_code for r in replies] == [200, 422, 200, 422]


def test_a_non_finite_output_fails_its_own_upload_not_its_batch(tmp_path, nh, monkeypatch):
    """Uploads are hashed in batches: a network output that is not finite for one image is a 422
    naming that upload, and the images batched with it still get their hashes (they did not:
    the whole batch failed with a 500 naming the image's position in the batch)."""
    expected = {name: nh.hash(data).hex for name, data in (("a.png", png(1)), ("b.png", png(2)))}
    black = io.BytesIO()
    Image.new("RGB", (64, 48)).save(black, "PNG")
    real_logits = nh.logits

    def nan_for_black(batch):
        out = np.array(real_logits(batch), copy=True)
        flat = np.asarray(batch).reshape(len(batch), -1)
        out[(flat == flat.min()).all(axis=1)] = np.nan  # a uniform image (the black upload)
        return out

    monkeypatch.setattr(nh, "logits", nan_for_black)
    app = create_app(ServeConfig(db=str(tmp_path / "h.db"), model=nh, workers=0, batch_size=8))
    with TestClient(app) as client:
        assert "bad.png: " in one_line_error(client.post("/hash", files={"image": ("bad.png", black.getvalue())}), 422)
        r = client.post("/lists/known/hashes", json={"hashes": [{"hash": expected["a.png"], "path": "a"}]})
        assert r.status_code == 200, r.text
        r = client.post("/match", data={"max_distance": "0"},
                        files=[("images", ("a.png", png(1))), ("images", ("bad.png", black.getvalue())),
                               ("images", ("b.png", png(2)))])
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [q.get("hash") for q in results] == [expected["a.png"], None, expected["b.png"]], results
        assert "bad.png" in results[1]["error"] and "not finite" in results[1]["error"], results[1]


def test_upload_limit_is_413(tmp_path, nh):
    app = create_app(ServeConfig(db=str(tmp_path / "h.db"), model=nh, workers=0, max_upload=10_000))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(6).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(buf, "PNG")
    big = buf.getvalue()
    assert len(big) > 10_000
    with TestClient(app) as client:
        assert "limit of 10000 bytes" in one_line_error(client.post("/hash", content=big), 413)
        # Without a Content-Length (chunked): counted as it arrives.
        chunks = (big[i:i + 4096] for i in range(0, len(big), 4096))
        assert "10000" in one_line_error(client.post("/hash", content=chunks), 413)
        r = client.post("/hash", files={"image": ("big.png", big, "image/png")})
        assert one_line_error(r, 413)
        assert client.post("/hash", content=png(7)).status_code == 200


def test_no_model_means_501_for_images_only(tmp_path):
    app = create_app(ServeConfig(db=str(tmp_path / "h.db"), model=None))
    with TestClient(app) as client:
        assert "--model" in one_line_error(client.post("/hash", content=png(1)), 501)
        assert client.get("/info").json()["model"] is None


# -- validation and the token ------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({"hashes": ["00" * 12, "zz" * 12], "max_distance": 4}, "hashes[1]"),
    ({"hashes": ["00" * 11], "max_distance": 4}, "hashes[0]"),
    ({"hashes": ["00" * 12], "max_distance": 33}, "max_distance"),
    ({"hashes": ["00" * 12], "max_distance": -1}, "max_distance"),
    ({"hashes": ["00" * 12], "max_distance": True}, "max_distance"),
    ({"hashes": ["00" * 12], "max_distance": "8"}, "max_distance"),
    ({"hashes": ["00" * 12], "max_distance": 4.5}, "max_distance"),
    ({"hashes": ["00" * 12], "max_distance": 4, "limit": "10"}, "limit"),
    ({"hashes": ["00" * 12]}, "max_distance"),
    ({"hashes": [], "max_distance": 3}, "hashes"),
    ({"hashes": ["00" * 12], "max_distance": 3, "lists": ["a\nb"]}, "lists[0]"),
])
def test_malformed_lookups_are_422_naming_the_field(client, body, field):
    message = one_line_error(client.post("/lookup", json=body), 422)
    assert message.startswith(field), message


def test_malformed_match_fields_are_422(client):
    r = client.post("/match", data={"hashes": "0123", "max_distance": "2"})
    assert one_line_error(r, 422).startswith("hashes[0]")
    r = client.post("/match", data={"hashes": "00" * 12, "max_distance": "40"})
    assert one_line_error(r, 422).startswith("max_distance")
    r = client.post("/match", data={"max_distance": "2"})
    assert "at least one query" in one_line_error(r, 422)


def test_non_loopback_needs_a_token(tmp_path):
    with pytest.raises(ServiceError, match="token"):
        create_app(ServeConfig(db=str(tmp_path / "h.db"), host="0.0.0.0"))
    with pytest.raises(ServiceError, match="16"):
        create_app(ServeConfig(db=str(tmp_path / "h.db"), host="0.0.0.0", token="short"))


def test_every_route_without_the_token_is_401(tmp_path):
    app = create_app(ServeConfig(db=str(tmp_path / "h.db"), host="0.0.0.0", token=TOKEN))
    paths = {(m, r.path) for r in app.routes for m in getattr(r, "methods", ()) or ()}
    assert {("GET", "/"), ("GET", "/health"), ("POST", "/hash"), ("GET", "/docs")} <= paths
    with TestClient(app) as client:
        for method, path in sorted(paths):
            url = path.replace("{name}", "x")
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                r = client.request(method, url, headers=headers)
                assert r.status_code == 401, (method, url, headers, r.status_code)
                assert r.headers["www-authenticate"] == "Bearer"
        ok = client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json() == {"status": "ok"}


def test_openapi_docs_and_page(client):
    schema = client.get("/openapi.json").json()
    assert {"/hash", "/match", "/lookup", "/lists", "/lists/{name}", "/lists/{name}/hashes",
            "/lists/{name}/import", "/lists/{name}/export", "/health", "/info"} <= set(schema["paths"])
    docs = client.get("/docs").text
    assert "swagger" in docs.lower()
    # Served from the package, not a CDN: every script and stylesheet the page loads is ours.
    import re

    assets = re.findall(r'(?:src|href)=["\']([^"\']+)', docs)
    assert assets and all(a.startswith("/") for a in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    page = client.get("/")
    assert page.status_code == 200 and 'id="drop"' in page.text and 'id="hex"' in page.text


# -- lists and matching (the store) ------------------------------------------------------------


def test_add_then_lookup_nearest_first_against_brute_force(client, nh):
    base = random_digests(60, seed=1)
    stored = [(f"img-{i}.jpg", d) for i, d in enumerate(base)]
    # Neighbours of base[0] at known distances, plus exact duplicates.
    stored += [(f"near-{k}", near(base[0], list(range(k)))) for k in (1, 3, 5, 8, 9)]
    stored += [("dup-a", base[1]), ("dup-b", base[1])]
    r = client.post("/lists/mine/hashes", json={"hashes": [{"hash": d.hex(), "path": p} for p, d in stored]})
    assert r.status_code == 200, r.text
    assert r.json()["added"] == len(stored)
    queries = [base[0], base[1], near(base[2], [0, 50, 95])]
    for max_distance in (0, 3, 8, 20):
        r = client.post("/lookup", json={"hashes": [q.hex() for q in queries], "max_distance": max_distance})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_id"] == nh.model_id
        for q, result in zip(queries, body["results"]):
            got = [(m["distance"], m["path"]) for m in result["matches"]]
            assert [d for d, _ in got] == sorted(d for d, _ in got)  # nearest first
            assert sorted(got) == brute_force(stored, q, max_distance)
            assert all(m["list"] == "mine" and bytes.fromhex(m["hash"]) in dict(stored).values()
                       for m in result["matches"])
    # limit: the nearest only.
    r = client.post("/lookup", json={"hashes": [base[0].hex()], "max_distance": 20, "limit": 3}).json()
    assert [m["distance"] for m in r["results"][0]["matches"]] == [d for d, _ in brute_force(stored, base[0], 20)][:3]


def test_an_added_hash_is_found_by_the_next_lookup(client):
    digest = random_digests(1, seed=7)[0]
    query = {"hashes": [digest.hex()], "max_distance": 0}
    client.post("/lists/a/hashes", json={"hashes": [{"hash": random_digests(1, seed=8)[0].hex(), "path": "x"}]})
    assert client.post("/lookup", json=query).json()["results"][0]["matches"] == []
    client.post("/lists/a/hashes", json={"hashes": [{"hash": digest.hex(), "path": "new one"}]})
    found = client.post("/lookup", json=query).json()["results"][0]["matches"]
    assert [(m["path"], m["distance"]) for m in found] == [("new one", 0)]


def test_lists_create_count_restrict_delete(client, nh):
    a, b = random_digests(2, seed=9)
    assert client.post("/lists", json={"name": "partner"}).status_code == 201
    # A name is a path segment of /lists/NAME: one with "/" could never be addressed.
    assert one_line_error(client.post("/lists", json={"name": "a/b"}), 422).startswith("name")
    assert client.get("/lists/partner").json() == {"name": "partner", "model_id": nh.model_id, "count": 0}
    client.post("/lists/partner/hashes", json={"hashes": [{"hash": a.hex(), "path": "pa"}]})
    client.post("/lists/own/hashes", json={"hashes": [{"hash": a.hex(), "path": "oa"}, {"hash": b.hex()}]})
    counts = {s["name"]: s["count"] for s in client.get("/lists").json()}
    assert counts == {"partner": 1, "own": 2}
    both = client.post("/lookup", json={"hashes": [a.hex()], "max_distance": 0}).json()["results"][0]["matches"]
    assert sorted((m["list"], m["path"]) for m in both) == [("own", "oa"), ("partner", "pa")]
    only = client.post("/lookup", json={"hashes": [a.hex()], "max_distance": 0, "lists": ["partner"]}).json()
    assert [(m["list"], m["path"]) for m in only["results"][0]["matches"]] == [("partner", "pa")]
    assert "nolist" in one_line_error(
        client.post("/lookup", json={"hashes": [a.hex()], "max_distance": 0, "lists": ["nolist"]}), 404)
    info = client.get("/info").json()
    assert info["version"] and {"name": "own", "model_id": nh.model_id, "count": 2} in info["lists"]
    assert [m["count"] for m in info["models"] if m["model_id"] == nh.model_id] == [3]
    assert client.delete("/lists/partner").json() == {"name": "partner", "deleted": 1}
    assert one_line_error(client.get("/lists/partner"), 404)
    assert one_line_error(client.delete("/lists/partner"), 404)
    after = client.post("/lookup", json={"hashes": [a.hex()], "max_distance": 0}).json()["results"][0]["matches"]
    assert [(m["list"], m["path"]) for m in after] == [("own", "oa")]


def test_lists_of_another_model_never_mix(client, nh):
    h = random_digests(1, seed=10)[0]
    other = "f" * 64
    r = client.post("/lists/theirs/hashes", json={"hashes": [{"hash": h.hex(), "path": "t"}], "model_id": other})
    assert r.status_code == 200, r.text
    assert client.get("/lists/theirs").json()["model_id"] == other
    # Adding under another model to an existing list is refused.
    r = client.post("/lists/theirs/hashes", json={"hashes": [{"hash": h.hex()}], "model_id": nh.model_id})
    assert one_line_error(r, 409)
    client.post("/lists/ours/hashes", json={"hashes": [{"hash": h.hex(), "path": "o"}]})
    ours = client.post("/lookup", json={"hashes": [h.hex()], "max_distance": 0}).json()
    assert ours["model_id"] == nh.model_id and [m["path"] for m in ours["results"][0]["matches"]] == ["o"]
    theirs = client.post("/lookup", json={"hashes": [h.hex()], "max_distance": 0, "model_id": "fff"}).json()
    assert theirs["model_id"] == other and [m["path"] for m in theirs["results"][0]["matches"]] == ["t"]
    # Without a model, the lists named give it (issue 17); with the server's model, their model is refused.
    by_list = client.post("/lookup", json={"hashes": [h.hex()], "max_distance": 0, "lists": ["theirs"]}).json()
    assert by_list["model_id"] == other and [m["path"] for m in by_list["results"][0]["matches"]] == ["t"]
    r = client.post("/lookup", json={"hashes": [h.hex()], "max_distance": 0, "lists": ["theirs"],
                                     "model_id": nh.model_id})
    assert one_line_error(r, 422)
    r = client.post("/lookup", json={"hashes": [h.hex()], "max_distance": 0, "lists": ["theirs", "ours"]})
    assert "different models" in one_line_error(r, 422)
    # Images are hashed with the server's model: another model's hashes are refused.
    r = client.post("/match", data={"max_distance": "0", "model_id": other},
                    files=[("images", ("q.png", png(1), "image/png"))])
    assert one_line_error(r, 422)


def test_match_images_and_hashes_with_per_item_errors(client, nh):
    pics = [png(20), png(21)]
    hashes = [nh.hash(p) for p in pics]
    client.post("/lists/pics/hashes", json={"hashes": [{"hash": h.hex, "path": f"p{i}"} for i, h in enumerate(hashes)]})
    r = client.post("/match", data={"max_distance": "0", "hashes": hashes[1].hex},
                    files=[("images", ("a.png", pics[0], "image/png")), ("images", ("bad.png", b"nope", "image/png"))])
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["query"] for x in results] == ["a.png", "bad.png", hashes[1].hex]
    assert [m["path"] for m in results[0]["matches"]] == ["p0"] and results[0]["hash"] == hashes[0].hex
    assert "not an image" in results[1]["error"] and "matches" not in results[1]
    assert [m["path"] for m in results[2]["matches"]] == ["p1"]
    only_bad = client.post("/match", data={"max_distance": "0"}, files=[("images", ("x.png", b"nope", "image/png"))])
    assert "x.png" in one_line_error(only_bad, 422)


def test_import_every_format_and_export_back(client, nh):
    ds = random_digests(4, seed=11)
    weird = os.fsdecode(b"caf\xe9 \xff.jpg")  # not UTF-8: kept as bytes
    text = f"{ds[0].hex()}  a b.jpg\nnot-a-hash  x\n{ds[1].hex()}  {weird}\n".encode("utf-8", "surrogateescape")
    r = client.post("/lists/t/import", content=text)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["imported"] == 2 and [s["line"] for s in body["skipped"]] == [2]
    csv_text = f"path,hash\nc.jpg,{ds[2].hex()}\nd.jpg,zz\n"
    r = client.post("/lists/c/import", files={"file": ("l.csv", csv_text.encode(), "text/csv")})
    assert r.json()["imported"] == 1 and [s["line"] for s in r.json()["skipped"]] == [3]
    jsonl = json.dumps({"hash": ds[3].hex(), "path": "j.jpg"}) + "\n{broken\n"
    r = client.post("/lists/j/import", content=jsonl.encode())
    assert r.json()["imported"] == 1 and [s["line"] for s in r.json()["skipped"]] == [2]

    exported = client.get("/lists/t/export?raw=true").content
    assert exported == f"{ds[0].hex()}  a b.jpg\n{ds[1].hex()}  {weird}\n".encode("utf-8", "surrogateescape")
    records = [json.loads(line) for line in client.get("/lists/t/export?format=jsonl").text.splitlines()]
    assert [r["hash"] for r in records] == [ds[0].hex(), ds[1].hex()]
    assert records[0]["path"] == "a b.jpg" and "path_b64" not in records[0]
    assert base64.b64decode(records[1]["path_b64"]) == b"caf\xe9 \xff.jpg"
    assert client.get("/lists/c/export?format=csv").text == f"path,hash,model,list\nc.jpg,{ds[2].hex()},{nh.model_id},c\n"
    # Other columns of an imported list come back (the formats and rules of `index export`).
    r = client.post("/lists/x/import", content=f"hash,path,source\n{ds[2].hex()},e.jpg,partner A\n".encode())
    assert r.json()["imported"] == 1
    assert client.get("/lists/x/export?format=csv").text == (
        f"path,hash,model,list,source\ne.jpg,{ds[2].hex()},{nh.model_id},x,partner A\n")
    assert client.get("/lists/x/export?format=tx-file").text == f"neuralhash {ds[2].hex()}\n"
    assert one_line_error(client.get("/lists/none/export"), 404)
    assert one_line_error(client.get("/lists/t/export?format=xml"), 422).startswith("format")
    # A lookup names the non-UTF-8 label losslessly too.
    found = client.post("/lookup", json={"hashes": [ds[1].hex()], "max_distance": 0}).json()["results"][0]["matches"]
    assert base64.b64decode(found[0]["path_b64"]) == b"caf\xe9 \xff.jpg"
    # Round trip: the export imports into another list unchanged.
    client.post("/lists/t2/import", content=exported)
    assert client.get("/lists/t2/export?raw=true").content == exported


def test_add_takes_labels_as_bytes(client):
    d = random_digests(1, seed=12)[0]
    raw = b"\xff\xfe name"
    r = client.post("/lists/b/hashes", json={"hashes": [{"hash": d.hex(), "path_b64": base64.b64encode(raw).decode()}]})
    assert r.status_code == 200, r.text
    assert client.get("/lists/b/export?raw=true").content == d.hex().encode() + b"  " + raw + b"\n"
    r = client.post("/lists/b/hashes", json={"hashes": [{"hash": d.hex(), "path_b64": "***"}]})
    assert one_line_error(r, 422).startswith("hashes[0]")


def test_routing_and_form_errors_are_one_line_of_json_too(client):
    """The API's errors are {"error": ...}: an unknown path, a wrong method and a multipart body
    without its boundary came back as Starlette's {"detail": ...}."""
    assert "GET /no-such-page: not found" == one_line_error(client.get("/no-such-page"), 404)
    assert "DELETE /hash" in one_line_error(client.delete("/hash"), 405)
    r = client.post("/hash", content=b"garbage", headers={"Content-Type": "multipart/form-data"})
    assert "boundary" in one_line_error(r, 400)


@pytest.mark.parametrize("model_id", ["", "a\nb", "\x00"])
def test_a_model_id_is_printable_and_not_empty(client, model_id):
    """POST /lists created lists of model '' or 'a<newline>b' (the CLI refuses an empty --model-id;
    `index lists` prints one line per list)."""
    assert "model_id" in one_line_error(client.post("/lists", json={"name": "l", "model_id": model_id}), 422)
    r = client.post("/lists/l/hashes", json={"hashes": [{"hash": "00" * 12}], "model_id": model_id})
    assert "model_id" in one_line_error(r, 422)
    assert client.get("/lists").json() == []


def test_another_sites_page_cannot_write(client):
    """On loopback there is no token: any web page the user visits could POST a text/plain body
    (no CORS preflight) to /lists/NAME/import and fill the database. Browsers name the page's
    origin; a request from another site's page is refused, the server's own page and clients
    that are not browsers are not."""
    body = ("00" * 12 + "  planted\n").encode()
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": "http://testserver:8080"}, {"Sec-Fetch-Site": "cross-site"}):
        r = client.post("/lists/x/import", content=body, headers={"Content-Type": "text/plain", **headers})
        assert "another site" in one_line_error(r, 403), headers
    assert client.get("/lists").json() == []
    # reading is not a write: another page may GET (it cannot read the answer without CORS)
    assert client.get("/health", headers={"Origin": "http://evil.example"}).status_code == 200
    r = client.post("/lists/x/import", content=body, headers={"Origin": "http://testserver",
                                                                "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200, r.text
    assert client.post("/lists/y/import", content=body).status_code == 200  # curl, scripts
    assert [l["name"] for l in client.get("/lists").json()] == ["x", "y"]


def test_dns_rebinding_is_refused(tmp_path, nh):
    """Served on loopback without a token, a page of evil.example re-pointed at 127.0.0.1 (DNS
    rebinding) was same-origin with the server: it could read and write everything. `neuralhash
    serve` answers loopback names only (ServeConfig.loopback_hosts_only)."""
    app = create_app(ServeConfig(db=str(tmp_path / "h.db"), model=None, workers=0, loopback_hosts_only=True))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/health").status_code == 200
        for host in ("localhost:8000", "[::1]:8000", "127.0.0.1"):
            assert client.get("/health", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example:8000", "evil.example", "127.0.0.1.evil.example", ""):
            assert "loopback names only" in one_line_error(client.get("/info", headers={"Host": host}), 403), host
    # with a token, the token is the guard (any name may reach a server bound to another address)
    app = create_app(ServeConfig(db=str(tmp_path / "h.db"), model=None, workers=0, host="0.0.0.0",
                                 token=TOKEN, loopback_hosts_only=True))
    with TestClient(app, base_url="http://server.example") as client:
        assert client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
