"""`~` in a path given to the Python API means the home folder, as in the shell (issue 17, item 3).

Every entry point that takes the path of a model, seed, cache, database, hash list, ONNX
output or report folder is called with a `~/...` path under a temporary HOME; before the
fix each failed with "no such file" (the `~` was taken as a folder's name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neuralhash.hashing.seed import HEADER_SIZE, default_seed_matrix


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    from neuralhash.demo.synthetic import write_neuralhash_v3b

    home = tmp_path_factory.mktemp("home")
    write_neuralhash_v3b(home / "nh", calibrate=False)
    (home / "nh" / "neuralhash_128x96_seed1.dat").write_bytes(bytes(HEADER_SIZE) + default_seed_matrix().tobytes())
    mp = pytest.MonkeyPatch()
    mp.setenv("HOME", str(home))
    mp.setenv("NEURALHASH_CACHE", str(home / "cache"))
    yield home
    mp.undo()


@pytest.fixture(autouse=True)
def _no_stray_tilde_folder(tmp_path, monkeypatch):
    """Run in an empty folder and check that no folder literally named `~` appears there."""
    monkeypatch.chdir(tmp_path)
    yield
    assert not (tmp_path / "~").exists()


def test_espresso_model_sources(home):
    from neuralhash import NeuralHash, load_model
    from neuralhash.espresso import locate

    assert locate("~/nh").net.parent == home / "nh"
    assert load_model("~/nh").inputs == load_model(home / "nh").inputs
    assert load_model("~/nh/NeuralHashv3b-current.espresso.net").layers
    from_tilde = NeuralHash.from_espresso("~/nh", cache_dir="~/other-cache")
    assert (home / "other-cache" / "onnx").is_dir()
    assert from_tilde.model_id == NeuralHash.from_espresso(home / "nh").model_id
    assert NeuralHash.from_source("~/nh").model_id == from_tilde.model_id


def test_onnx_file_seed_file_and_save_model(home):
    from neuralhash import NeuralHash, load_model
    from neuralhash.convert import convert, save_model

    save_model(convert(load_model("~/nh")), "~/nh.onnx")
    assert (home / "nh.onnx").is_file()
    by_path = NeuralHash.from_onnx(home / "nh.onnx")
    assert NeuralHash.from_onnx("~/nh.onnx").model_id == by_path.model_id
    assert NeuralHash.from_source("~/nh.onnx").model_id == by_path.model_id
    seeded = NeuralHash.from_onnx("~/nh.onnx", seed="~/nh/neuralhash_128x96_seed1.dat")
    np.testing.assert_array_equal(seeded.seed, default_seed_matrix())


def test_hash_lists_and_databases(home):
    from neuralhash.lists.audit import read_hash_list, read_reference
    from neuralhash.store import HashStore

    (home / "list.txt").write_text("59a34eabe31910abfb06f308  a.jpg\n")
    assert len(read_hash_list("~/list.txt").packed) == 1
    assert len(read_reference("~/list.txt")) == 1
    with HashStore("~/photos.db", create=True):
        pass
    assert (home / "photos.db").is_file()


def test_perception_hasher(home):
    pytest.importorskip("perception")
    from neuralhash import NeuralHash
    from neuralhash.integrations.perception import NeuralHashHasher

    assert NeuralHashHasher("~/nh").model.model_id == NeuralHash.from_espresso(home / "nh").model_id


def test_distributed_model(home):
    pytest.importorskip("distributed")
    from neuralhash import NeuralHash
    from neuralhash.hashing.distributed import share_model

    class Client:  # records what would be sent to the cluster
        def submit(self, fn, payload, **kwargs):
            return payload

    assert share_model(Client(), "~/nh")["model_id"] == NeuralHash.from_espresso(home / "nh").model_id


def test_firmware_sources_and_outputs(home):
    pytest.importorskip("dissect.apfs")
    import extract_images as X  # tests/: the APFS images the extract tests write

    from neuralhash import NeuralHash
    from neuralhash.firmware import extract

    X.ios_container(X.demo_files(home / "cache")).save(home / "fw.apfs")
    result = extract("~/fw.apfs", "~/out")
    assert (home / "out" / "NeuralHashv3b-current.espresso.net").is_file() and result is not None
    assert NeuralHash.from_source("~/fw.apfs").model_id == NeuralHash.from_espresso(home / "out").model_id
