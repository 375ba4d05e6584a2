"""docs/firmware.md, run as written: its ```sh and ```python blocks marked ``run-by tests/test_extract_docs.py``
run in a temporary HOME holding an IPSW and a disk image built by tests/apfs_writer.py (the demo model's files
at Apple's paths) and photo.jpg; the --list output shown is the output printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, draw_image

pytest.importorskip("dissect.apfs", reason="the 'extract' extra (dissect.apfs) is not installed")

import apfs_writer as W  # noqa: E402
import extract_images as X  # noqa: E402

DOC = ROOT / "docs" / "firmware.md"
MARK = "<!-- docs-test: run-by tests/test_extract_docs.py -->"
IPSW = "iPhone14,2_15.0_19A346_Restore.ipsw"


def blocks(kind: str | None = None) -> list[tuple[str, str]]:
    """(language, text) of the fenced blocks right after the run-by mark."""
    found = re.findall(r"(<!--[^\n]*-->)?\n```(\w+)\n(.*?)```", DOC.read_text(), flags=re.S)
    return [(lang, text) for mark, lang, text in found if mark == MARK and (kind is None or lang == kind)]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    cache = home / ".cache" / "neuralhash"
    files = X.demo_files(cache)
    X.ios_ipsw(home / IPSW, files)
    W.wrap_gpt(X.macos_container(files)).save(home / "disk.img")
    draw_image(home / "photo.jpg", seed=3, size=(300, 200))
    bin_dir = home / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "neuralhash"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m neuralhash \"$@\"\n")
    shim.chmod(0o755)
    return home


def run(home: Path, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": f"{home / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(args, cwd=home, env=env, input=stdin, capture_output=True, text=True, timeout=600)


def test_doc_has_runnable_blocks():
    assert len(blocks("sh")) >= 3 and len(blocks("python")) >= 1


@pytest.mark.parametrize("index", range(len(blocks())))
def test_block_runs_as_written(home, index):
    lang, text = blocks()[index]
    proc = run(home, ["bash", "-euo", "pipefail", "-s"] if lang == "sh" else [sys.executable, "-"], stdin=text)
    assert proc.returncode == 0, f"{lang} block {index} failed:\n{text}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr


def test_list_output_is_the_one_shown(home):
    shown = re.search(r"```text\n(source   iPhone.*?)```", DOC.read_text(), flags=re.S).group(1)
    proc = run(home, ["neuralhash", "extract", IPSW, "--list"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == shown
