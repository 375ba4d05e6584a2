"""Every ```sh and ```python block of README.md and docs/*.md runs as written (issue 17, item 3).

The blocks of one page run in order, each in a fresh process, in one working folder of that
page's own, so a block may use what an earlier block of its page made. The setting is the
one the documentation assumes:

- ``HOME`` is a temporary folder whose ``~/nh`` holds the demo model's Espresso files and
  the seed file (as a user's copy of Apple's files would), and ``~/Pictures`` two photos;
- the working folder holds ``photo.jpg``, ``a.jpg`` and ``b.jpg`` (photos: the package's
  sample images saved as JPEG);
- ``neuralhash`` (and ``python``, ``python3``) on ``PATH`` run this checkout with this
  interpreter.

The line right before a fence may hold a marker:
``<!-- docs-test: skip (reason) -->`` (the block needs what a test cannot have: Apple's
files, a cluster, installing packages) or ``<!-- docs-test: run-by tests/FILE.py -->``
(another test runs this block; that file must contain the block's text). Blocks of other
languages (```text, ```console, ```json...) are output or data and are not run; ```bash,
```shell and the like are refused (they would look run and never be). A block that fails
is reported with its file and line, its exit code and the end of its output. Background
jobs a block starts (a server) are ended with its process group when the block ends.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

RUN = ("sh", "python")
# Commands under another name would silently not run: they must be marked ```sh.
MISNAMED = ("bash", "shell", "zsh", "py", "python3", "pycon")
MARKER = re.compile(r"<!--\s*docs-test:\s*(skip|run-by)\b\s*(.*?)\s*-->")
BLOCK_TIMEOUT = 300
IMAGES = {"photo.jpg": "landscape.png", "a.jpg": "shapes.png", "b.jpg": "circles.png"}
PICTURES = {"beach.jpg": "landscape.png", "shapes.jpg": "shapes.png"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: tuple[str, str] | None  # (kind, argument)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the marker on the line before each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, lang = opening.group(1), opening.group(2).lower()
        end = i + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        marker = MARKER.search(lines[i - 1]) if i > 0 else None
        found.append(Block(page, i + 1, lang, "\n".join(lines[i + 1:end]) + "\n",
                           (marker.group(1), marker.group(2)) if marker else None))
        i = end + 1
    return found


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


# -- the setting ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """(environment, a folder to copy as each page's working folder): built once for the module."""
    from PIL import Image

    from neuralhash.demo import demo_model_dir
    from neuralhash.hashing.seed import HEADER_SIZE, default_seed_matrix

    root = tmp_path_factory.mktemp("docs-run")
    home, work, bin_dir, cache = root / "home", root / "work", root / "bin", root / "cache"
    for folder in (home, work, bin_dir, cache):
        folder.mkdir()
    demo = demo_model_dir(cache)
    shutil.copytree(demo, home / "nh", ignore=shutil.ignore_patterns("COMPLETE", "*.onnx"))
    (home / "nh" / "neuralhash_128x96_seed1.dat").write_bytes(bytes(HEADER_SIZE) + default_seed_matrix().tobytes())
    data = ROOT / "src" / "neuralhash" / "data"
    for folder, images in ((work, IMAGES), (home / "Pictures", PICTURES)):
        folder.mkdir(exist_ok=True)
        for name, source in images.items():
            Image.open(data / source).convert("RGB").save(folder / name, quality=92)
    for name, command in (("neuralhash", f'"{sys.executable}" -m neuralhash'), ("python", f'"{sys.executable}"'),
                          ("python3", f'"{sys.executable}"')):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEURALHASH_", "PYTEST_")) and k not in ("PYTHONSAFEPATH",)}
    env.update(HOME=str(home), PATH=os.pathsep.join([str(bin_dir), os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
               NEURALHASH_CACHE=str(cache), XDG_CACHE_HOME=str(root / "xdg-cache"), OMP_NUM_THREADS="1",
               COLUMNS="100", NO_COLOR="1")
    return env, work


def _run_block(block: Block, env: dict, cwd: Path) -> str | None:
    """None when the block succeeds, else what to report."""
    if block.lang == "python":
        script = cwd / f"docs_block_{block.line}.py"
        script.write_text(block.text, encoding="utf-8")
        argv = [sys.executable, script.name]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", block.text]
    log = cwd / f".docs_block_{block.line}.log"
    with open(log, "wb") as out:  # a file, not a pipe: a background job holding it open does not stall us
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=BLOCK_TIMEOUT)
            failure = None if proc.returncode == 0 else f"exit code {proc.returncode}"
        except subprocess.TimeoutExpired:
            failure = f"still running after {BLOCK_TIMEOUT} s"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever the block left running in the background
            except ProcessLookupError:
                pass
            proc.wait()
    output = log.read_bytes()
    log.unlink()
    if failure is None:
        return None
    tail = output.decode("utf-8", "replace")[-3000:]
    return f"{block.where}: {block.lang} block failed ({failure})\n{block.text}--- output ---\n{tail}"


def _check_run_by(block: Block) -> str | None:
    name = block.marker[1].split()[0] if block.marker[1] else ""
    test = ROOT / name
    if not name.startswith("tests/") or not test.is_file():
        return f"{block.where}: run-by names {name!r}, which is not a test file"
    text = test.read_text(encoding="utf-8")
    # The test holds the block's text, or reads the blocks marked with its name from the page itself.
    reads_page = Path(block.page).name in text and name in text
    if block.text.strip() not in text and not reads_page:
        return f"{block.where}: run-by {name}, but that file neither contains this block's text nor reads its page"
    return None


@pytest.mark.parametrize("page", pages(), ids=_page_id)
def test_page_blocks_run_as_written(page, setting):
    env, template = setting
    cwd = Path(env["HOME"]).parent / f"page-{page.stem}"
    shutil.rmtree(cwd, ignore_errors=True)
    shutil.copytree(template, cwd)
    problems = []
    for block in blocks(page):
        if block.marker is not None:
            kind, argument = block.marker
            if kind == "skip" and not re.fullmatch(r"\(.+\)", argument):
                problems.append(f"{block.where}: a skip marker needs a reason in parentheses")
            elif kind == "run-by":
                problems.append(_check_run_by(block))
            continue
        if block.lang in RUN:
            problems.append(_run_block(block, env, cwd))
        elif block.lang in MISNAMED:
            problems.append(f"{block.where}: a ```{block.lang} block is not run: use sh or python (run), "
                            "or text (output)")
    problems = [p for p in problems if p]
    assert not problems, "\n\n".join(problems)


# -- the runner itself ------------------------------------------------------------------------


def test_parser_finds_blocks_lines_and_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```sh\necho one\n```\n<!-- docs-test: skip (needs a Mac) -->\n```python\nx = 1\n```\n"
                    "```text\nout\n```\n<!-- docs-test: run-by tests/test_x.py -->\n````sh\n```\n````\n")
    found = blocks(page)
    assert [(b.line, b.lang, b.text, b.marker) for b in found] == [
        (3, "sh", "echo one\n", None),
        (7, "python", "x = 1\n", ("skip", "(needs a Mac)")),
        (10, "text", "out\n", None),
        (14, "sh", "```\n", ("run-by", "tests/test_x.py")),
    ]


def test_a_failing_block_is_reported_with_its_file_and_line(setting, tmp_path):
    env, _ = setting
    page = ROOT / "README.md"  # any page: only its name is used in the message
    failing = _run_block(Block(page, 42, "sh", "neuralhash hash --model ~/nh no-such.jpg\n", None), env, tmp_path)
    assert failing is not None and failing.startswith("README.md:42: sh block failed (exit code 1)")
    assert "no-such.jpg" in failing
    assert _run_block(Block(page, 1, "sh", "neuralhash compare --model ~/nh a.jpg a.jpg\n", None), env,
                      Path(env["HOME"]).parent / "work") is None
    broken = _run_block(Block(page, 7, "python", "import neuralhash\nraise SystemExit(3)\n", None), env, tmp_path)
    assert broken is not None and broken.startswith("README.md:7: python block failed (exit code 3)")


def test_background_jobs_end_with_their_block(setting, tmp_path):
    env, _ = setting
    pid_file = tmp_path / "pid"
    assert _run_block(Block(ROOT / "README.md", 1, "sh", f"sleep 300 &\necho $! > {pid_file}\n", None), env,
                      tmp_path) is None
    pid = int(pid_file.read_text())
    for _ in range(100):  # killed at once; its zombie is reaped by init a moment later
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return
        time.sleep(0.05)
    pytest.fail(f"the block's background job {pid} outlived it")


def test_run_by_must_name_a_test_holding_the_block():
    page = ROOT / "README.md"
    assert _check_run_by(Block(page, 1, "sh", "python -m sphinx -W --keep-going -b html docs docs/_build/html\n",
                               ("run-by", "tests/test_docs_build.py"))) is None
    assert "neither contains" in _check_run_by(Block(page, 1, "sh", "rm -rf /\n",
                                                     ("run-by", "tests/test_docs_build.py")))
    assert "not a test file" in _check_run_by(Block(page, 1, "sh", "true\n", ("run-by", "tests/nothing.py")))
