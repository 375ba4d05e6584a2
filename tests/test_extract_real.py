"""``NEURALHASH_TEST_FIRMWARE=PATH``: the end-to-end test on real Apple firmware (an IPSW, a .dmg, an APFS or GPT
image, or a folder) when a user has one; skipped otherwise. Apple's files never enter the repository."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import draw_image

FIRMWARE_ENV = "NEURALHASH_TEST_FIRMWARE"
FIRMWARE = os.environ.get(FIRMWARE_ENV)

pytestmark = pytest.mark.skipif(not FIRMWARE, reason=f"${FIRMWARE_ENV} is not set (a real IPSW or image)")


def test_real_firmware_extract_convert_hash(tmp_path, monkeypatch, capsys):
    pytest.importorskip("dissect.apfs", reason="the 'extract' extra (dissect.apfs) is not installed")
    from neuralhash.cli import main
    from neuralhash.hashing import NeuralHash
    from neuralhash.hashing.seed import is_apple_seed, read_seed_file

    monkeypatch.setenv("NEURALHASH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "nh"
    assert main(["extract", FIRMWARE, "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    names = {f["name"]: f for f in manifest["files"]}
    assert "neuralhash_128x96_seed1.dat" in names
    assert is_apple_seed(read_seed_file(out / "neuralhash_128x96_seed1.dat"))  # Apple's published projection
    net = next(n for n in names if n.endswith(".espresso.net"))
    assert names[net]["variant"] in ("float32", "float16")
    assert manifest["os"] and manifest["os"]["version"]

    pictures = [draw_image(tmp_path / f"p{i}.png", seed=i, size=(400, 300)) for i in range(3)]
    assert main(["convert", str(out / net), "-o", str(tmp_path / "m.onnx")]) == 0
    expected = [NeuralHash.from_source(str(out / net)).hash(p).hex for p in pictures]
    capsys.readouterr()
    assert main(["hash", "--model", FIRMWARE, *map(str, pictures)]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == expected
    assert main(["hash", "--model", str(tmp_path / "m.onnx"), *map(str, pictures)]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == expected
    assert Path(out / net).stat().st_size == names[net]["size"]
