"""A client generated from /openapi.json parses every documented answer, errors included (issue 18 item 8).

datamodel-code-generator (from PyPI, the test extra) writes pydantic models from the schema
with extra fields forbidden; every request below gets an answer whose status the schema
documents for that route, and the model the schema names for it parses the body.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("datamodel_code_generator")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import draw_shapes  # noqa: E402
from neuralhash.hashing import NeuralHash  # noqa: E402
from neuralhash.service import ServeConfig, create_app  # noqa: E402
from neuralhash.service import app as app_module  # noqa: E402
from neuralhash.service.backend import Backend  # noqa: E402

TOKEN = "an-openapi-test-token-0123456789"


@pytest.fixture(scope="module")
def nh(module_env):
    return NeuralHash.demo()


def generated_models(schema_text: str, tmp_path):
    (tmp_path / "openapi.json").write_text(schema_text, encoding="utf-8")
    out = tmp_path / "client_models.py"
    subprocess.run([sys.executable, "-m", "datamodel_code_generator", "--input", str(tmp_path / "openapi.json"),
                    "--input-file-type", "openapi", "--output", str(out),
                    "--output-model-type", "pydantic_v2.BaseModel", "--extra-fields", "forbid"],
                   check=True, capture_output=True, timeout=300)
    spec = importlib.util.spec_from_file_location("client_models", out)
    module = importlib.util.module_from_spec(spec)
    sys.modules["client_models"] = module  # pydantic resolves the models' annotations through it
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["client_models"]
    return module


class Checker:
    """Parses answers with the generated models, by the schema's documentation of each route."""

    def __init__(self, schema: dict, models) -> None:
        self.schema = schema
        self.models = models
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(self, response, path: str, status: int) -> None:
        method = response.request.method.lower()
        assert response.status_code == status, (path, response.text[:300])
        documented = self.schema["paths"][path][method]["responses"]
        assert str(status) in documented, f"{method} {path}: {status} is not documented"
        content = documented[str(status)]["content"]
        ctype = response.headers["content-type"].split(";")[0]
        assert ctype in content, f"{method} {path} {status}: {ctype} not documented ({list(content)})"
        self.seen.add((method, path, status))
        if ctype != "application/json":
            return
        body_schema = content[ctype]["schema"]
        body = response.json()
        if body_schema.get("type") == "array":
            model = getattr(self.models, body_schema["items"]["$ref"].rsplit("/", 1)[1])
            for item in body:
                model.model_validate(item)
        else:
            getattr(self.models, body_schema["$ref"].rsplit("/", 1)[1]).model_validate(body)


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    draw_shapes(120, 90, seed=seed).save(buf, format="PNG")
    return buf.getvalue()


def test_a_generated_client_parses_every_answer(tmp_path, nh, monkeypatch):
    app = create_app(ServeConfig(db=str(tmp_path / "h.db"), model=nh, workers=0, max_upload=1 << 20))
    with TestClient(app) as c:
        schema_text = c.get("/openapi.json").text
        check = Checker(c.get("/openapi.json").json(), generated_models(schema_text, tmp_path))
        weird = "ff" * 12
        check(c.post("/lists", json={"name": "a"}), "/lists", 201)
        check(c.post("/lists", json={"name": "a"}), "/lists", 200)
        check(c.post("/lists", json={"name": "a", "model_id": "e" * 64}), "/lists", 409)
        check(c.post("/lists", json={"name": ".."}), "/lists", 422)
        check(c.get("/lists"), "/lists", 200)
        check(c.get("/lists/a"), "/lists/{name}", 200)
        check(c.get("/lists/nope"), "/lists/{name}", 404)
        h = nh.hash(png(1))
        check(c.post("/lists/a/hashes", json={"hashes": [{"hash": h.hex, "path": "one.png"},
                                                          {"hash": weird, "path_b64": "/w=="}]}),
              "/lists/{name}/hashes", 200)
        check(c.post("/lists/a/hashes", json={"model_id": "e" * 64, "hashes": [{"hash": weird}]}),
              "/lists/{name}/hashes", 409)
        check(c.post("/lists/b/import", content=f"{weird}  w.jpg\nbad line\n".encode()), "/lists/{name}/import", 200)
        check(c.post("/lists/c/import", content=b"bad line\n"), "/lists/{name}/import", 422)
        check(c.post("/hash", content=png(1)), "/hash", 200)
        check(c.post("/hash", content=b"not an image"), "/hash", 422)
        check(c.post("/hash", content=b"x" * (2 << 20)), "/hash", 413)
        check(c.post("/lookup", json={"hashes": [h.hex, weird], "max_distance": 4, "limit": 1}), "/lookup", 200)
        check(c.post("/lookup", json={"hashes": ["zz"], "max_distance": 4}), "/lookup", 422)
        check(c.post("/lookup", json={"hashes": [h.hex], "max_distance": 4, "lists": ["nope"]}), "/lookup", 404)
        monkeypatch.setattr(app_module, "MAX_RESULTS", 1)  # an answer cut by its bounds parses too
        check(c.post("/lookup", json={"hashes": [h.hex, h.hex], "max_distance": 4}), "/lookup", 200)
        monkeypatch.undo()
        check(c.post("/match", data={"max_distance": "4", "hashes": weird},
                     files=[("images", ("ok.png", png(1), "image/png")), ("images", ("bad.png", b"x", "image/png"))]),
              "/match", 200)
        check(c.post("/match", data={"max_distance": "99", "hashes": weird}), "/match", 422)
        check(c.get("/lists/a/export"), "/lists/{name}/export", 200)
        check(c.get("/lists/a/export?format=jsonl"), "/lists/{name}/export", 200)
        check(c.get("/lists/a/export?format=csv&raw=true"), "/lists/{name}/export", 200)
        check(c.get("/lists/nope/export"), "/lists/{name}/export", 404)
        check(c.post("/lists/a/hashes", json={"hashes": [{"hash": weird}]}, headers={"Origin": "http://evil.example"}),
              "/lists/{name}/hashes", 403)
        check(c.get("/health"), "/health", 200)
        check(c.get("/info"), "/info", 200)
        check(c.delete("/lists/b"), "/lists/{name}", 200)
        check(c.delete("/lists/b"), "/lists/{name}", 404)

        def broken(self, batch):
            raise RuntimeError("index unreadable")

        monkeypatch.setattr(Backend, "_run_lookups", broken)
        check(c.get("/health"), "/health", 503)

    with TestClient(create_app(ServeConfig(db=str(tmp_path / "h2.db")))) as bare:
        check(bare.post("/hash", content=png(1)), "/hash", 501)
    with TestClient(create_app(ServeConfig(db=str(tmp_path / "h3.db"), token=TOKEN))) as guarded:
        check(guarded.get("/info"), "/info", 401)
    # Every route was answered at least once.
    routes = {(m, p) for p, ops in check.schema["paths"].items() for m in ops}
    assert routes <= {(m, p) for m, p, _ in check.seen}
