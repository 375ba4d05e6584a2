"""The service's interface details: status codes, list names, exports for people, the model shown
(issue 18 items 9 to 13)."""

from __future__ import annotations

import base64
import csv
import io
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from test_serve_imports import client, nh  # noqa: E402,F401  (the same fixtures: a demo-model app)

from neuralhash.service import ServeConfig, create_app  # noqa: E402

TOKEN = "an-interface-test-token-0123456789"
ROOT = Path(__file__).resolve().parents[1]


def test_status_codes(client, nh, tmp_path):
    assert client.post("/lists", json={"name": "a"}).status_code == 201
    again = client.post("/lists", json={"name": "a"})  # exists, same model: nothing created
    assert again.status_code == 200 and again.json() == {"name": "a", "model_id": nh.model_id, "count": 0}
    other = "e" * 64
    # A model mismatch is 409 (a conflict with what is stored) on create, add and import alike.
    assert client.post("/lists", json={"name": "a", "model_id": other}).status_code == 409
    assert client.post("/lists/a/hashes", json={"model_id": other, "hashes": [{"hash": "00" * 12}]}).status_code == 409
    assert client.post(f"/lists/a/import?model_id={other}", content=b"00" * 12 + b"\n").status_code == 409
    assert client.head("/health").status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(tmp_path, scheme):
    app = create_app(ServeConfig(db=str(tmp_path / "h.db"), token=TOKEN))
    with TestClient(app) as c:
        assert c.get("/info", headers={"Authorization": f"{scheme} {TOKEN}"}).status_code == 200
        assert c.get("/info", headers={"Authorization": f"{scheme} {TOKEN}x"}).status_code == 401
        assert c.get("/info", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


@pytest.mark.parametrize("name", [".", ".."])
def test_unreachable_list_names_are_refused(client, name):
    r = client.post("/lists", json={"name": name})
    assert r.status_code == 422 and "path step" in r.json()["error"]
    r = client.post("/lists/%2E%2E/hashes", json={"hashes": [{"hash": "00" * 12}]}) if name == ".." else \
        client.post("/lists/%2E/hashes", json={"hashes": [{"hash": "00" * 12}]})
    assert r.status_code in (404, 422)
    assert client.get("/lists").json() == []


def test_exports_for_people_and_raw(client):
    labels = [b"\xffodd.jpg", b'=HYPERLINK("http://x.example","click")', b"+cmd", b"-5", b"@sum", b"plain.jpg"]
    hashes = [bytes([k]) * 12 for k in range(len(labels))]
    r = client.post("/lists/people/hashes", json={"hashes": [
        {"hash": h.hex(), "path_b64": base64.b64encode(label).decode()} for h, label in zip(hashes, labels)]})
    assert r.status_code == 200
    text = client.get("/lists/people/export")
    assert text.headers["content-type"].endswith("charset=utf-8")
    text.content.decode("utf-8")  # valid UTF-8: the odd byte is U+FFFD
    assert "\ufffdodd.jpg" in text.text
    got = client.get("/lists/people/export?format=csv")
    rows = list(csv.DictReader(io.StringIO(got.content.decode("utf-8"))))
    assert [r["path"] for r in rows] == ["\ufffdodd.jpg", "'=HYPERLINK(\"http://x.example\",\"click\")", "'+cmd",
                                         "-5", "'@sum", "plain.jpg"]
    # raw=true: the stored bytes, formulas as they are (a tool's export; index import reads it back).
    raw = client.get("/lists/people/export?format=csv&raw=true")
    assert raw.headers["content-type"] == "application/octet-stream"
    assert b"\xffodd.jpg" in raw.content and b'"=HYPERLINK(""http://x.example"",""click"")"' in raw.content


def test_the_model_is_shown_without_the_servers_paths(client, nh):
    assert "/" in nh.description  # the demo's description names its folder
    info = client.get("/info").json()
    assert info["model"]["model_id"] == nh.model_id
    assert "/" not in info["model"]["description"] and info["model"]["description"]
    client.post("/lists/l/hashes", json={"hashes": [{"hash": "00" * 12}]})
    assert all("/" not in m["description"] for m in client.get("/info").json()["models"])
    page = client.get("/").text
    assert nh.model_id in page and str(Path(nh.description.split(", ")[-1].split(";")[0])) not in page


def test_the_docs_say_the_api_docs_are_served_locally():
    text = (ROOT / "docs" / "service.md").read_text(encoding="utf-8")
    assert "/docs" in text and "CDN" not in text.replace("no CDN", "")
