"""/health says whether the server can serve (issue 18 items 2 and 9): 503 when a part it needs is stuck."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from neuralhash.service import ServeConfig, create_app  # noqa: E402
from neuralhash.service import app as app_module  # noqa: E402
from neuralhash.service.backend import Backend  # noqa: E402


@pytest.fixture()
def client(tmp_path):
    with TestClient(create_app(ServeConfig(db=str(tmp_path / "h.db")))) as c:
        c.post("/lists", json={"name": "l", "model_id": "m"})
        c.post("/lists/l/hashes", json={"hashes": [{"hash": "00" * 12, "path": "zero"}]})
        yield c


def test_health_get_and_head(client):
    assert client.get("/health").json() == {"status": "ok"}
    head = client.head("/health")
    assert head.status_code == 200 and head.content == b""


def test_health_fails_when_the_thread_pool_is_stuck(client, monkeypatch):
    monkeypatch.setattr(app_module, "HEALTH_TIMEOUT", 0.5)
    release = threading.Event()
    # The database read stuck (as behind pool threads held by leaked exports): /health must not wait on it.
    real = Backend._probe_database

    def stuck(self):
        release.wait(10)
        return real(self)

    monkeypatch.setattr(Backend, "_probe_database", stuck)
    try:
        started = time.monotonic()
        r = client.get("/health")
        assert r.status_code == 503 and "database" in r.json()["error"]
        assert time.monotonic() - started < 5
    finally:
        release.set()
    monkeypatch.setattr(Backend, "_probe_database", real)
    assert client.get("/health").status_code == 200


def test_health_fails_when_lookups_fail(client, monkeypatch):
    def broken(self, batch):
        raise RuntimeError("index unreadable")

    monkeypatch.setattr(Backend, "_run_lookups", broken)
    r = client.get("/health")
    assert r.status_code == 503 and "lookups" in r.json()["error"]
