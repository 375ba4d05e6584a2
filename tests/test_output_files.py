"""Output paths (-o): what is at the path is never destroyed, and nothing is left beside it.

``fileio.atomic_write`` is what decode, convert, the ONNX cache and the
robustness report write through.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import default_signal_dispositions
from neuralhash.cli import main
from neuralhash.errors import NeuralHashError
from neuralhash.espresso.writer import write_espresso
from neuralhash.files import fileio
from neuralhash.files.fileio import atomic_write

SRC = Path(__file__).resolve().parents[1] / "src"


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _small_model(folder: Path) -> Path:
    layer = {"type": "convolution", "name": "conv", "bottom": "x", "top": "y", "C": 2, "K": 3, "Nx": 1, "Ny": 1,
             "n_groups": 1, "pad_mode": 0, "has_biases": 0, "blob_weights": 1}
    write_espresso(folder, "model", layers=[layer], shapes={"x": (1, 3, 4, 4), "y": (1, 2, 4, 4)},
                   blobs={1: np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1)}, compressed=False)
    return folder


# -- the library function ---------------------------------------------------------------------


def test_new_and_existing_regular_files_keep_their_mode(tmp_path):
    out = tmp_path / "a.bin"
    assert atomic_write(out, [b"one", b"two"]) == 6
    assert out.read_bytes() == b"onetwo"
    out.chmod(0o640)
    atomic_write(out, b"three")
    assert out.read_bytes() == b"three" and stat.S_IMODE(out.stat().st_mode) == 0o640
    assert _listing(tmp_path) == ["a.bin"]


def test_symlink_is_followed_and_stays_a_link(tmp_path):
    target = tmp_path / "real.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target.name)
    atomic_write(link, b"new")
    assert link.is_symlink() and os.readlink(link) == "real.bin"
    assert target.read_bytes() == b"new"
    dangling = tmp_path / "dangling.bin"
    dangling.symlink_to("created.bin")
    atomic_write(dangling, b"made")
    assert (tmp_path / "created.bin").read_bytes() == b"made" and dangling.is_symlink()
    assert _listing(tmp_path) == ["created.bin", "dangling.bin", "link.bin", "real.bin"]


def test_read_only_file_is_refused_untouched(tmp_path):
    out = tmp_path / "ro.bin"
    out.write_bytes(b"keep")
    out.chmod(0o444)
    with pytest.raises(NeuralHashError, match="ro.bin: is read-only"):
        atomic_write(out, b"new")
    assert out.read_bytes() == b"keep" and _listing(tmp_path) == ["ro.bin"]


def test_directory_and_socket_are_refused(tmp_path):
    with pytest.raises(NeuralHashError, match="is a directory"):
        atomic_write(tmp_path, b"x")
    import socket

    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(NeuralHashError, match="is a socket; refusing"):
            atomic_write(path, b"x")
        assert stat.S_ISSOCK(path.stat().st_mode)


def test_fifo_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic_write(fifo, [b"through ", b"the fifo"])
    reader.join(10)
    assert got == [b"through the fifo"] and stat.S_ISFIFO(fifo.stat().st_mode)
    assert _listing(tmp_path) == ["pipe"]


def test_character_devices_are_written_through():
    assert atomic_write("/dev/null", b"x" * 1000) == 1000
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with pytest.raises(NeuralHashError, match=r"^/dev/full: cannot write \(No space left on device\)$"):
        atomic_write("/dev/full", b"x" * 1000)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_dash_is_standard_output(capsysbinary):
    assert atomic_write("-", [b"to ", b"stdout"]) == 9
    assert capsysbinary.readouterr().out == b"to stdout"


def test_failure_mid_write_leaves_the_old_file_and_no_debris(tmp_path):
    out = tmp_path / "a.bin"
    out.write_bytes(b"old")

    def chunks():
        yield b"partial"
        raise RuntimeError("producer failed")

    for unnamed in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            if not unnamed:
                mp.setattr(fileio, "_open_unnamed", lambda folder: -1)
            with pytest.raises(RuntimeError):
                atomic_write(out, chunks())
        assert out.read_bytes() == b"old" and _listing(tmp_path) == ["a.bin"]


def test_unnamed_file_falls_back_to_a_copy_when_linking_is_refused(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    out = tmp_path / "a.bin"
    payload = os.urandom(300_000)
    atomic_write(out, [payload[:1000], payload[1000:]])
    assert out.read_bytes() == payload and _listing(tmp_path) == ["a.bin"]


# -- the commands ---------------------------------------------------------------------------------


def test_convert_to_standard_output(tmp_path, capfdbinary):
    _small_model(tmp_path / "m")
    assert main(["convert", str(tmp_path / "m"), "-o", "-"]) == 0
    captured = capfdbinary.readouterr()
    proto = onnx.load_from_string(captured.out)
    assert proto.graph.output[0].name == "y"
    assert b"wrote -:" in captured.err
    assert not (Path.cwd() / "-").exists()


def test_commands_on_a_full_device_and_a_read_only_file(tmp_path, capsys):
    src = _small_model(tmp_path / "m")
    if os.path.exists("/dev/full"):
        assert main(["convert", str(src), "-o", "/dev/full"]) == 1
        err = capsys.readouterr().err
        assert err == "neuralhash: error: /dev/full: cannot write (No space left on device)\n"
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    ro = tmp_path / "ro.json"
    ro.write_text("keep")
    ro.chmod(0o444)
    assert main(["decode", str(src / "model.espresso.shape"), "-o", str(ro)]) == 1
    assert "is read-only" in capsys.readouterr().err and ro.read_text() == "keep"


# -- signals mid-write ---------------------------------------------------------------------------

_CONVERT = """
import sys
from neuralhash.files import fileio
from neuralhash.cli import main
if sys.argv[1] == "named":
    fileio._open_unnamed = lambda folder: -1  # the portable path: a hidden temporary name
sys.exit(main(["convert", sys.argv[2], "-o", sys.argv[3]]))
"""


@pytest.fixture(scope="module")
def big_model(tmp_path_factory) -> Path:
    """A 1x1 convolution with 4096 x 4096 float32 weights: 64 MiB of ONNX to write, long enough to catch."""
    folder = tmp_path_factory.mktemp("big")
    c = 4096
    layer = {"type": "convolution", "name": "conv", "bottom": "x", "top": "y", "C": c, "K": c, "Nx": 1, "Ny": 1,
             "n_groups": 1, "pad_mode": 0, "has_biases": 0, "blob_weights": 1}
    weights = np.random.default_rng(0).standard_normal((c, c, 1, 1), dtype=np.float32)
    write_espresso(folder, "model", layers=[layer], shapes={"x": (1, c, 1, 1), "y": (1, c, 1, 1)},
                   blobs={1: weights}, compressed=False)
    return folder


def _writing_into(pid: int, folder: Path) -> bool:
    """True while the process holds a file open in ``folder`` (the unnamed or hidden temporary file)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fds.iterdir())
    except OSError:
        return False
    for fd in entries:
        try:
            if os.readlink(fd).startswith(str(folder) + "/"):
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the write in progress")
@pytest.mark.parametrize("mode,signum,expected_rc", [
    ("unnamed", signal.SIGTERM, -signal.SIGTERM),
    ("unnamed", signal.SIGKILL, -signal.SIGKILL),
    ("named", signal.SIGTERM, -signal.SIGTERM),
    ("named", signal.SIGHUP, -signal.SIGHUP),
    ("named", signal.SIGINT, 130),
])
def test_signal_mid_write_leaves_the_old_output_and_nothing_else(big_model, tmp_path, mode, signum, expected_rc):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "big.onnx"
    out.write_bytes(b"previous model")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    for attempt in range(3):  # the write lasts a fraction of a second: a busy machine may need another try
        proc = subprocess.Popen([sys.executable, "-c", _CONVERT, mode, str(big_model), str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=default_signal_dispositions)  # not nohup's SIG_IGN
        deadline = time.monotonic() + 60
        caught = False
        while proc.poll() is None and time.monotonic() < deadline:
            if _writing_into(proc.pid, out_dir):
                proc.send_signal(signum)
                caught = True
                break
        proc.communicate(timeout=60)
        assert _listing(out_dir) == ["big.onnx"]
        if caught and out.read_bytes() == b"previous model":
            break
        out.write_bytes(b"previous model")  # finished before the signal: try again
    else:
        pytest.fail("never caught the command mid-write")
    assert proc.returncode == expected_rc
    assert out.read_bytes() == b"previous model"
