"""docs/hma.md, run as written: the threatexchange CLI block, and the Hasher-Matcher-Actioner setup from
PostgreSQL to a match, through its exchange, to stopping it.

The blocks marked ``run-by tests/test_hma_docs.py`` are read from the page and run verbatim, in order,
in one bash process (the page says to use one shell), in a folder laid out as a checkout of this
repository (``scripts``, ``src``, ``pyproject.toml``, ``.venv-hma`` are links to this tree's) holding
``photo.jpg`` and ``a.jpg``. The only settings from outside are the ones the page names: ``HMA_SOURCE``
(step 0, which downloads, is replaced by HMA 1.1.7 from the shared folder), and ``OMM_DATABASE_URI``, a
fresh database, so the run never touches the ``hma`` database the page sets up. This file also holds the
blocks' text (:data:`BLOCKS`), which the docs runner checks, and the test checks it equals the page.

HMA's port is the page's, 5100: the test skips when something else holds it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, SHARED

from neuralhash.integrations.hma.local import Database, HMAUnavailable, find_venv

PAGE = ROOT / "docs" / "hma.md"
MARK = "<!-- docs-test: run-by tests/test_hma_docs.py -->"
HMA_SOURCE = SHARED / "vendor" / "hma"
DATA = ROOT / "src" / "neuralhash" / "data"

#: The page's blocks run by this file, as the page has them (the docs runner checks this file holds each).
BLOCKS = [
    r'''export NEURALHASH_MODEL=~/nh                     # Apple's Espresso files; or a converted .onnx file; or demo
threatexchange config extensions add neuralhash.integrations.threatexchange
threatexchange hash photo photo.jpg              # pdq ..., neuralhash HEX (the hash `neuralhash hash` prints)
threatexchange hash photo photo.jpg > known.txt
threatexchange config collab edit local_file --create --filename "$PWD/known.txt" "Known list"
threatexchange fetch
threatexchange match photo photo.jpg             # ... neuralhash 0 (Known list) INVESTIGATION_SEED''',
    r'''scripts/hma-postgres.sh''',
    r'''scripts/hma-venv.sh "$HMA_SOURCE"''',
    r'''export OMM_CONFIG=$PWD/src/neuralhash/integrations/hma/omm_config.py
export NEURALHASH_MODEL=demo
MIGRATION_COMMAND=1 .venv-hma/bin/flask --app OpenMediaMatch.app db upgrade --directory "$HMA_SOURCE/src/OpenMediaMatch/migrations"
.venv-hma/bin/gunicorn --bind 127.0.0.1:5100 --daemon --pid hma.pid --error-logfile hma.log --capture-output 'OpenMediaMatch.app:create_app()'
for i in $(seq 60); do curl -sf http://127.0.0.1:5100/status && break; sleep 1; done''',
    r'''curl -s -X POST http://127.0.0.1:5100/c/banks -H 'Content-Type: application/json' -d '{"name": "KNOWN"}'
curl -s -F photo=@photo.jpg http://127.0.0.1:5100/c/bank/KNOWN/content
.venv-hma/bin/flask --app OpenMediaMatch.app build_indices''',
    r'''.venv-hma/bin/neuralhash hash --model "$NEURALHASH_MODEL" photo.jpg
curl -s -F photo=@photo.jpg http://127.0.0.1:5100/h/hash
for i in $(seq 30); do curl -s -F photo=@photo.jpg http://127.0.0.1:5100/m/lookup | grep KNOWN && break; sleep 1; done
curl -s "http://127.0.0.1:5100/m/raw_lookup?signal_type=neuralhash&include_distance=true&signal=$(.venv-hma/bin/neuralhash hash --model "$NEURALHASH_MODEL" photo.jpg | cut -c1-24)"
curl -s "http://127.0.0.1:5100/c/bank/KNOWN/content/1?include_signals=true"''',
    r'''.venv-hma/bin/neuralhash hash --model "$NEURALHASH_MODEL" a.jpg | cut -c1-24 | sed 's/^/neuralhash /' > partner.txt
printf '{"bank": "PARTNER", "api": "local_file", "api_json": {"filename": "%s"}}' "$PWD/partner.txt" > exchange.json
curl -s -X POST http://127.0.0.1:5100/c/exchanges -H 'Content-Type: application/json' -d @exchange.json
.venv-hma/bin/flask --app OpenMediaMatch.app fetch
.venv-hma/bin/flask --app OpenMediaMatch.app build_indices
for i in $(seq 30); do curl -s -F photo=@a.jpg http://127.0.0.1:5100/m/lookup | grep PARTNER && break; sleep 1; done''',
    r'''kill "$(cat hma.pid)"''',
]


def page_blocks() -> list[str]:
    """The text of each fenced block right after this file's run-by marker, in page order."""
    lines = PAGE.read_text(encoding="utf-8").splitlines()
    found = []
    for k, line in enumerate(lines[:-1]):
        if line.strip() == MARK:
            assert lines[k + 1].startswith("```sh"), f"docs/hma.md:{k + 2}: the marker must precede a ```sh fence"
            end = next(j for j in range(k + 2, len(lines)) if lines[j].startswith("```"))
            found.append("\n".join(lines[k + 2:end]))
    return found


def test_this_file_holds_the_pages_blocks_verbatim():
    assert page_blocks() == BLOCKS


def _photos(folder: Path) -> None:
    # As the docs runner makes them: the package's sample images saved as JPEG.
    for name, source in (("photo.jpg", "landscape.png"), ("a.jpg", "shapes.png")):
        Image.open(DATA / source).convert("RGB").save(folder / name, quality=92)


def _demo_home(home: Path, cache: Path) -> None:
    from neuralhash.demo import demo_model_dir
    from neuralhash.hashing.seed import HEADER_SIZE, default_seed_matrix

    shutil.copytree(demo_model_dir(cache), home / "nh", ignore=shutil.ignore_patterns("COMPLETE", "*.onnx"))
    (home / "nh" / "neuralhash_128x96_seed1.dat").write_bytes(bytes(HEADER_SIZE) + default_seed_matrix().tobytes())


def _cli_hash(path: Path, model, cache: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "neuralhash", "hash", "--model", str(model), str(path)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
                                                               "NEURALHASH_CACHE": str(cache)}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0]


def test_threatexchange_cli_block(tmp_path):
    pytest.importorskip("threatexchange")
    beside = Path(sys.executable).parent / "threatexchange"
    exe = beside if beside.is_file() else shutil.which("threatexchange")
    if exe is None:
        pytest.skip("the threatexchange command is not installed")
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    _demo_home(home, cache)
    _photos(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURALHASH_", "TX_"))}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT / "src"), NEURALHASH_CACHE=str(cache),
               PATH=f"{Path(exe).parent}{os.pathsep}{env.get('PATH', '')}")
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", BLOCKS[0]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    want = _cli_hash(tmp_path / "photo.jpg", home / "nh", cache)
    assert f"neuralhash {want}" in done.stdout.splitlines()
    assert (tmp_path / "known.txt").read_text().splitlines().count(f"neuralhash {want}") == 1
    assert re.search(r"^neuralhash 0 \(Known list\)", done.stdout, re.M), done.stdout


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds (closed connections linger)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _stop(pid_file: Path) -> None:
    """gunicorn's master (daemonized: not our child) stopped, and waited for."""
    text = pid_file.read_text().strip() if pid_file.is_file() else ""
    if not text.isdigit():
        return
    pid = int(text)
    for sig in (15, 15, 9):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(100):
            time.sleep(0.2)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return


def test_hma_setup_steps_run_as_written(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("step 1 (scripts/hma-postgres.sh) installs and starts PostgreSQL as root")
    if not HMA_SOURCE.is_dir():
        pytest.skip(f"no HMA source at {HMA_SOURCE}")
    try:
        find_venv(ROOT)
    except HMAUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide HMA's environment: {exc}")
        pytest.skip(str(exc))
    if not _port_free(5100):
        pytest.skip("port 5100, the page's, is in use by another program")
    work, cache = tmp_path / "checkout", tmp_path / "cache"
    work.mkdir()
    for name in ("scripts", "src", "pyproject.toml", "README.md", ".venv-hma"):
        (work / name).symlink_to(ROOT / name)
    _photos(work)
    steps = BLOCKS[1:]
    # A separator before each step (on a line of its own: curl's output may end without a newline).
    script = "".join(f"printf '\\n@@ step {k}\\n'\n{text}\n" for k, text in enumerate(steps))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURALHASH_", "OMM_", "PYTHON"))}
    env.update(HMA_SOURCE=str(HMA_SOURCE), NEURALHASH_CACHE=str(cache))
    # Step 1 makes sure PostgreSQL runs and the role exists; then a database of this run's own.
    first = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", steps[0]], cwd=work, env=env,
                           capture_output=True, text=True, timeout=600)
    if first.returncode:
        pytest.skip(f"PostgreSQL could not be started: {first.stderr.strip()[-500:]}")
    try:
        db = Database.create()
    except HMAUnavailable as exc:
        pytest.skip(str(exc))
    env["OMM_DATABASE_URI"] = db.uri
    try:
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=work, env=env,
                              capture_output=True, text=True, timeout=900)
    finally:
        _stop(work / "hma.pid")  # normally step 7 did; a failed run leaves it to this
        db.drop()
    log = (work / "hma.log").read_text(errors="replace")[-2000:] if (work / "hma.log").is_file() else ""
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}\n--- hma.log ---\n{log}"
    out = dict(re.findall(r"^@@ step (\d+)\n(.*?)(?=^@@ step |\Z)", done.stdout, re.M | re.S))
    start, bank, match, exchange = ([line for line in out[str(k)].splitlines() if line.strip()] for k in (2, 3, 4, 5))
    assert start[-1] == "I-AM-ALIVE"
    assert json.loads(bank[0]) == {"matching_enabled_ratio": 1.0, "name": "KNOWN"}
    want = _cli_hash(work / "photo.jpg", "demo", cache)
    assert json.loads(bank[1])["signals"]["neuralhash"] == want
    assert match[0] == f"{want}  photo.jpg"
    assert json.loads(match[1])["neuralhash"] == want
    assert json.loads(match[2])["neuralhash"] == {"KNOWN": [{"bank_content_id": 1, "distance": "0"}]}
    assert json.loads(match[3]) == {"matches": [{"bank_content_id": 1, "distance": "0"}]}
    content = json.loads(match[4])
    assert content["bank"]["name"] == "KNOWN" and content["signals"]["neuralhash"] == want
    assert json.loads(exchange[0]) == {"message": "Created successfully"}
    other = _cli_hash(work / "a.jpg", "demo", cache)
    assert (work / "partner.txt").read_text() == f"neuralhash {other}\n"
    # a.jpg is in PARTNER; it is in KNOWN's photo.jpg's reach too where the (synthetic) demo model puts
    # the two JPEGs within the threshold (it does on x86-64: 5 bits).
    apart = (int(want, 16) ^ int(other, 16)).bit_count()
    expected = {"PARTNER": [{"bank_content_id": 2, "distance": "0"}]}
    if apart <= 8:
        expected["KNOWN"] = [{"bank_content_id": 1, "distance": str(apart)}]
    assert json.loads(exchange[-1])["neuralhash"] == expected
