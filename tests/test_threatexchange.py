"""The threatexchange extension, through threatexchange's own CLI (a subprocess, temporary HOME) and API."""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import neuralhash
from neuralhash.cli import main
from conftest import threatexchange_runner

SRC = str(Path(neuralhash.__file__).resolve().parents[1])
MODULE = "neuralhash.integrations.threatexchange"
DATA = Path(neuralhash.__file__).resolve().parent / "data"


def _flip(hex_text: str, bits) -> str:
    value = int(hex_text, 16)
    for b in bits:
        value ^= 1 << (95 - b)
    return f"{value:024x}"


def test_importing_neuralhash_imports_neither_tool():
    code = ("import sys, neuralhash, neuralhash.cli, neuralhash.integrations, neuralhash.lists.audit; "
            "print(sorted(m for m in ('threatexchange', 'perception') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": SRC}, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("module,extra", [(MODULE, "threatexchange"),
                                          ("neuralhash.integrations.perception", "perception")])
def test_without_the_extra_the_error_says_what_to_install(module, extra):
    tool = extra
    code = (f"import sys; sys.modules[{tool!r}] = None\n"
            f"try:\n    import {module}\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": SRC}, check=True).stdout.strip()
    assert out == (f"neuralhash.integrations.{extra} needs the {tool} package: "
                   f"pip install '.[{extra}]' in a checkout of neuralhash (or 'WHEEL[{extra}]' for a wheel built "
                   "from it)")


# --------------------------------------------------------------------------- the API

tx = pytest.importorskip("threatexchange")


@pytest.fixture(scope="module")
def ext():
    import importlib

    return importlib.import_module(MODULE)


def test_manifest_and_signal_basics(ext):
    from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest
    from threatexchange.interface_validation import SignalTypeMapping
    from threatexchange.content_type.photo import PhotoContent
    from threatexchange.signal_type.pdq.signal import PdqSignal

    manifest = ThreatExchangeExtensionManifest.load_from_module_name(MODULE)
    assert manifest.signal_types == (ext.NeuralHashSignal,)
    SignalTypeMapping([PhotoContent], [PdqSignal, ext.NeuralHashSignal])  # no name clash, valid types
    sig = ext.NeuralHashSignal
    assert sig.get_name() == "neuralhash"
    assert sig.validate_signal_str(" 59A34EABE31910ABFB06F308\n") == "59a34eabe31910abfb06f308"
    for bad in ["", "59a34eabe31910abfb06f30", "59a34eabe31910abfb06f3080", "59a34eabe31910abfb06f30g"]:
        with pytest.raises(ValueError, match="24 hex digits"):
            sig.validate_signal_str(bad)
    examples = sig.get_examples()
    assert [sig.validate_signal_str(e) for e in examples] == examples
    assert [ext.hamming(examples[0], e) for e in examples] == [0, 1, 2, 3]
    random.seed(1)
    assert sig.validate_signal_str(sig.get_random_signal())
    near = sig.compare_hash(examples[0], examples[3])
    assert near.match and near.distance.distance == 3
    far = _flip(examples[0], range(ext.DEFAULT_THRESHOLD + 1))
    assert not sig.compare_hash(examples[0], far).match
    assert sig.compare_hash(examples[0], far, ext.DEFAULT_THRESHOLD + 1).match


def test_index_equals_a_linear_scan_and_pickles(ext):
    rng = np.random.default_rng(2)
    base = [bytes(b).hex() for b in rng.integers(0, 256, (3000, 12), dtype=np.uint8)]
    entries = [(h, f"e{i}") for i, h in enumerate(base)]
    entries += [(_flip(base[i], range(i % 12)), f"near{i}") for i in range(0, 300, 3)]  # 0..11 bits away
    entries += [(base[5].upper(), "same-as-e5")]  # the same hash twice: both entries come back
    index = ext.NeuralHashIndex.build(entries)
    assert index.threshold == ext.DEFAULT_THRESHOLD
    for q in [base[5], base[0], base[99], _flip(base[3], [0, 50])]:
        got = sorted((m.similarity_info.distance, m.metadata) for m in index.query(q))
        want = sorted((ext.hamming(h, q), meta) for h, meta in entries if ext.hamming(h, q) <= ext.DEFAULT_THRESHOLD)
        assert got == want
        assert got  # every query has a planted neighbour
    buf = io.BytesIO()
    index.serialize(buf)
    assert len(buf.getvalue()) < 200 * len(entries)  # the search tables are not pickled
    again = ext.NeuralHashIndex.deserialize(io.BytesIO(buf.getvalue()))
    assert [(m.similarity_info.distance, m.metadata) for m in again.query(base[5])] == \
        [(m.similarity_info.distance, m.metadata) for m in index.query(base[5])]
    assert ext.NeuralHashIndex(threshold=0).query(base[0]) == []
    narrow = ext.NeuralHashIndex(threshold=0)
    narrow.add_all(entries)
    assert {m.metadata for m in narrow.query(base[5])} == {"e5", "same-as-e5"}


def test_hashing_errors_are_neuralhash_errors(ext, tmp_path, monkeypatch):
    from threatexchange.cli.exceptions import CommandError

    from neuralhash.errors import NeuralHashError

    monkeypatch.delenv(ext.MODEL_ENV, raising=False)
    monkeypatch.setenv("NEURALHASH_MODEL_PATH", str(tmp_path))  # an empty folder: no model
    ext.set_model(None)
    with pytest.raises(NeuralHashError, match=r"no usable model .*\$NEURALHASH_MODEL") as info:
        ext.NeuralHashSignal.hash_from_bytes(b"anything")
    assert isinstance(info.value, CommandError)
    monkeypatch.setenv(ext.THRESHOLD_ENV, "97")
    with pytest.raises(NeuralHashError, match="NEURALHASH_TX_THRESHOLD"):
        ext.default_threshold()


# --------------------------------------------------------------------------- the real CLI


@pytest.fixture(scope="module")
def tx_run(tmp_path_factory):
    return threatexchange_runner(tmp_path_factory, text=True)


def test_threatexchange_cli_end_to_end(tx_run, tmp_path, capsys, module_env):
    # The bundled sample photos: far apart under the demo model, unlike pictures drawn alike.
    photos = tmp_path / "photos"
    photos.mkdir()
    listed, near, unrelated = photos / "listed.png", photos / "near one.png", photos / "unrelated.jpg"
    for name, target in [("landscape.png", listed), ("circles.png", near), ("noise.jpg", unrelated)]:
        shutil.copyfile(DATA / name, target)

    added = tx_run("config", "extensions", "add", MODULE)
    assert "neuralhash - NeuralHashSignal" in added.stdout

    # `threatexchange hash photo` prints what `neuralhash hash --model demo` prints.
    tx_hashes = {}
    for img in (listed, near, unrelated):
        lines = [line.split() for line in tx_run("hash", "photo", str(img)).stdout.splitlines()]
        tx_hashes[img] = dict(lines)["neuralhash"]
    assert main(["hash", "--model", "demo", "--workers", "0", str(listed), str(near), str(unrelated)]) == 0
    ours = dict(line.split("  ", 1)[::-1] for line in capsys.readouterr().out.splitlines())
    assert {Path(p): h for p, h in ours.items()} == tx_hashes

    # A local-file collaboration holding the listed photo's hash, one 3 bits from the
    # second photo's, and unrelated hashes; the unrelated photo is far from all of them.
    rng = np.random.default_rng(4)
    others = [bytes(b).hex() for b in rng.integers(0, 256, (20, 12), dtype=np.uint8)]
    signals = [tx_hashes[listed], _flip(tx_hashes[near], [1, 40, 90])] + others
    from neuralhash.integrations.threatexchange import DEFAULT_THRESHOLD, hamming

    assert min(hamming(tx_hashes[unrelated], s) for s in signals) > DEFAULT_THRESHOLD
    signal_file = tmp_path / "signals.txt"
    signal_file.write_text("".join(f"neuralhash {s}\n" for s in signals))
    tx_run("config", "collab", "edit", "local_file", "--create", "--filename", str(signal_file), "Known list")
    fetched = tx_run("fetch")
    assert "Building index for neuralhash with 22 signals" in fetched.stderr + fetched.stdout

    hit = tx_run("match", "photo", str(listed)).stdout.split()
    assert hit[:3] == ["neuralhash", "0", "(Known"]
    hit = tx_run("match", "photo", str(near)).stdout.split()
    assert hit[:2] == ["neuralhash", "3"]
    assert tx_run("match", "photo", str(unrelated)).stdout == ""

    # An unreadable photo: one line naming it, no traceback.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    proc = tx_run("match", "photo", str(broken), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"neuralhash signal: {broken}: not an image, or a format Pillow cannot read"

    # No model: the message says what to set.
    proc = tx_run("hash", "photo", str(listed), check=False, NEURALHASH_MODEL="")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "$NEURALHASH_MODEL" in proc.stderr and "NEURALHASH_MODEL_PATH" in proc.stderr
