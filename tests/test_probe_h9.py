"""Defects found by probing the merged project with hostile inputs (issue 10's classes, again)."""

from __future__ import annotations

import json
import shutil

import pytest

from neuralhash.cli import main
from conftest import WILD_DIR


def _wild_copy(tmp_path, name="FindFour"):
    src = WILD_DIR / f"{name}.mlmodelc"
    if not src.is_dir():
        pytest.skip(f"{src} is absent")
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


def _edit_layer(folder, layer_name, **fields):
    net = folder / "model.espresso.net"
    doc = json.loads(net.read_text())
    layer = next(l for l in doc["layers"] if l["name"] == layer_name)
    layer.update(fields)
    net.write_text(json.dumps(doc))


@pytest.mark.parametrize("value", [2**63, 1e30, 2**31])
def test_huge_integer_field_is_refused_naming_layer_and_field(tmp_path, capsys, value):
    """Espresso's integer fields are 32-bit: a larger one (or a huge float) is a GraphError, not an ONNX ValueError."""
    folder = _wild_copy(tmp_path, "SSDOcr")
    _edit_layer(folder, "402", pad_l=value)
    assert main(["convert", str(folder), "-o", str(tmp_path / "o.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'402'" in err and "'pad_l'" in err and "out of range" in err, err
    assert not (tmp_path / "o.onnx").exists()
    # inspect lists what it cannot read as a problem and carries on (README: never raised)
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "problem" in out and "'pad_l' is out of range" in out, out


def _edit_transform(folder, **fields):
    net = folder / "model.espresso.net"
    doc = json.loads(net.read_text())
    doc["transform_params"]["input1"].update(fields)
    net.write_text(json.dumps(doc))


@pytest.mark.parametrize("fields", [{"bias_b": {}}, {"scale": "x"}, {"scale": 1e300}, {"bias_r": 10**400},
                                    {"scale": True}, {"bias_g": None}])
def test_verify_odd_transform_params_is_one_line(tmp_path, capsys, fields):
    """verify preprocesses with the input's transform_params: a value that is not a finite number is
    an error naming the file, input and field (inspect still shows it, as it is)."""
    folder = _wild_copy(tmp_path, "FindFour")
    _edit_transform(folder, **fields)
    assert main(["verify", str(folder), "--seeds", "1"]) == 1
    err = capsys.readouterr().err.strip()
    key = next(iter(fields))
    assert err.count("\n") == 0 and "transform_params" in err and repr(key) in err and "model.espresso.net" in err, err
    assert main(["inspect", str(folder)]) == 0


def test_server_shutdown_interrupts_a_write_that_outlives_the_grace_period(tmp_path):
    """A write still running at shutdown (a huge import, after uvicorn's grace period) held the
    server's exit forever after SIGTERM: its SQL is interrupted and its transaction rolled back."""
    import asyncio
    import threading
    import time

    pytest.importorskip("fastapi")
    from neuralhash.service.backend import Backend

    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"

    async def scenario():
        backend = Backend(str(tmp_path / "s.db"))
        task = asyncio.ensure_future(backend._writer.run(lambda store: store._db.execute(endless).fetchone()))
        await asyncio.sleep(0.5)  # the statement is running in the writer thread
        t0 = time.monotonic()
        closing = threading.Thread(target=backend.close, daemon=True)
        closing.start()
        while closing.is_alive() and time.monotonic() - t0 < 20:
            await asyncio.sleep(0.1)
        assert not closing.is_alive(), "close() did not return: the running write was not stopped"
        with pytest.raises(Exception, match="interrupt"):
            await task

    asyncio.run(scenario())


def test_what_escapes_the_application_is_logged_in_one_line():
    """A request cut off at the end of the grace period reached uvicorn's log as a 40-line traceback."""
    import asyncio
    import io
    import logging

    from neuralhash.service.server import _one_line

    stream = io.StringIO()
    log = logging.getLogger("test.h9.uvicorn")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.addFilter(_one_line)
    log.propagate = False
    try:
        raise asyncio.CancelledError("Task cancelled, timeout graceful shutdown exceeded")
    except BaseException as exc:
        log.error("Exception in ASGI application\n", exc_info=exc)
    text = stream.getvalue()
    assert text == ("ERROR: Exception in ASGI application: CancelledError: "
                    "Task cancelled, timeout graceful shutdown exceeded\n"), text


def _database(folder):
    from neuralhash.store import HashStore

    rng = __import__("numpy").random.default_rng(3)
    lines = [f"{bytes(rng.integers(0, 256, 12, dtype='uint8')).hex()}  img{i}.jpg" for i in range(200)]
    (folder / "l.txt").write_text("\n".join(lines) + "\n")
    assert main(["index", "import", str(folder / "r.db"), str(folder / "l.txt"), "--model-id", "769e"]) == 0
    return folder / "r.db", lines


def _read_only_commands(db, lines, capsys):
    capsys.readouterr()
    assert main(["index", "lists", str(db)]) == 0
    assert "200" in capsys.readouterr().out
    assert main(["match", str(db), lines[7].split()[0], "--max-distance", "0"]) == 0
    assert "img7.jpg" in capsys.readouterr().out
    assert main(["index", "export", str(db)]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    assert main(["index", "import", str(db), str(db.parent / "l.txt"), "--list", "more"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "read-only" in err and str(db) in err, err


def test_a_database_on_a_read_only_file_system_is_read(tmp_path, capsys):
    """A WAL database on a read-only mount (a snapshot, a DVD, a read-only volume) could not be opened
    at all, even by the read-only commands ("cannot open it (a missing folder, or no permission)"):
    SQLite cannot create its -shm file there. Needs root to mount; skipped otherwise."""
    import os
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a file system here (not root)")
    try:
        db, lines = _database(mnt)
        assert subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True).returncode == 0
        _read_only_commands(db, lines, capsys)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_read_only_medium_reads_through_immutable(tmp_path, capsys, monkeypatch):
    """The same rule where mounting is not possible: the file system says it is read-only (statvfs)."""
    import os

    db, lines = _database(tmp_path)
    real = os.statvfs

    class ReadOnly:
        def __init__(self, result):
            self._r = result

        def __getattr__(self, name):
            return getattr(self._r, name)

        @property
        def f_flag(self):
            return self._r.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(real(p)))
    _read_only_commands(db, lines, capsys)


def test_a_fifo_in_a_folder_is_not_opened(tmp_path):
    """`hash DIR` and `index add DB DIR` blocked for ever on a FIFO named like an image in the folder."""
    import os
    import socket
    import threading

    from neuralhash.files.walk import walk_images

    (tmp_path / "a.png").write_bytes(b"x")
    os.mkfifo(tmp_path / "b.png")
    os.symlink(tmp_path / "missing.png", tmp_path / "c.png")  # dangling: listed, its reader reports it
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "d.png"))
    os.symlink(tmp_path / "b.png", tmp_path / "e.png")  # a link to the FIFO
    found = []
    walker = threading.Thread(target=lambda: found.extend(walk_images(str(tmp_path), {".png"}, lambda p, r: None)),
                              daemon=True)
    walker.start()
    walker.join(10)
    sock.close()
    assert found == [str(tmp_path / "a.png"), str(tmp_path / "c.png")]


def test_verify_with_the_onnx_of_another_model_is_one_line(tmp_path, capsys):
    """verify SRC --onnx OTHER.onnx ended in ONNX Runtime's ValueError traceback (missing inputs)."""
    find_four = _wild_copy(tmp_path, "FindFour")
    ssd = WILD_DIR / "SSDOcr.mlmodelc"
    other = tmp_path / "ff.onnx"
    assert main(["convert", str(find_four), "-o", str(other)]) == 0
    capsys.readouterr()
    assert main(["verify", str(ssd), "--onnx", str(other), "--seeds", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(other) in err and "'input1'" in err and "'boxes'" in err, err
    assert main(["verify", str(find_four), "--onnx", str(other), "--seeds", "1"]) == 0  # its own: passes


@pytest.mark.parametrize("port", ["65536", "70000"])
def test_serve_port_above_65535_is_a_usage_error(tmp_path, capsys, port):
    """`serve --port 70000` served on port 4464 (70000 - 65536), saying so only in passing."""
    pytest.importorskip("fastapi")
    with pytest.raises(SystemExit) as stop:
        main(["serve", str(tmp_path / "s.db"), "--port", port])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--port" in err and port in err, err
    assert not (tmp_path / "s.db").exists()


def test_audit_max_distance_above_96_is_a_usage_error(tmp_path, capsys):
    """It read the list first, then exited 1 with "max_distance must be between 0 and 96" (a Python name)."""
    lst = tmp_path / "l.txt"
    lst.write_text("59a34eabe31910abfb06f308  a.jpg\n")
    with pytest.raises(SystemExit) as stop:
        main(["audit", str(lst), "--max-distance", "97"])
    assert stop.value.code == 2
    assert "argument --max-distance" in capsys.readouterr().err


def test_hash_with_a_model_that_is_not_neuralhash_names_that_model(tmp_path, capsys, monkeypatch):
    """`hash --model SSDOcr.mlmodelc` named the converted file in the cache (~/.cache/.../HEX.onnx)."""
    from PIL import Image

    ssd = WILD_DIR / "SSDOcr.mlmodelc"
    if not ssd.is_dir():
        pytest.skip(f"{ssd} is absent")
    monkeypatch.setenv("NEURALHASH_CACHE", str(tmp_path / "cache"))
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    for _ in range(2):  # converted, then found in the cache
        assert main(["hash", "--model", str(ssd), str(tmp_path / "a.png")]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(ssd) in err and ".onnx" not in err and "360" in err, err
