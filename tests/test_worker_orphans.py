"""Decoding workers exit when the process that started them dies, however it dies (issue 17, item 8):
`kill -9` of `index add` left its workers blocked on a pipe for minutes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import draw_image

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find the workers")


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0]


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _ppid_and_state(int(entry))
            if info is not None:
                parents[int(entry)] = info[0]
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    info = _ppid_and_state(pid)
    return info is not None and info[1] not in ("Z", "X")  # a zombie has exited


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_workers_exit_when_their_parent_is_killed(tmp_path, how):
    image = draw_image(tmp_path / "a.png", 1)
    script = (
        "import itertools, sys, time\n"
        "from neuralhash.hashing.pipeline import decoded\n"
        f"stream = decoded(itertools.repeat({str(image)!r}), workers=3, window=12)\n"
        "for _ in range(6):\n"
        "    next(stream)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"  # stops consuming: the workers wait for work on their pipe
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        workers: set[int] = set()
        while len(workers) < 3 and time.monotonic() < deadline:
            workers = {p for p in _descendants(parent.pid) if _alive(p)}
            time.sleep(0.1)
        assert len(workers) >= 3  # three workers (and the forkserver)
        parent.send_signal(how)
        parent.wait(30)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "worker processes outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in _descendants(parent.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass



_ABANDON = r"""
import threading, time
from neuralhash.hashing.pipeline import decoded

class Sleeper:
    # An item whose unpickling, in a worker, sleeps for an hour: a worker stuck mid-task.
    def __fspath__(self):
        return "/nonexistent/sleeper.png"
    def __reduce__(self):
        return (time.sleep, (3600,))

if __name__ == "__main__":
    stream = decoded(iter([Sleeper()] * 4), workers=2, window=4)  # never closed
    threading.Thread(target=lambda: next(stream), daemon=True).start()
    time.sleep(2)  # the workers are inside the hour
    print("leaving", flush=True)
"""


def test_a_program_that_abandons_a_pipeline_with_a_stuck_worker_still_exits(tmp_path):
    """concurrent.futures' exit hook joins every executor; a worker stuck mid-task (or one CPython
    started after it terminated the others of a broken pool) held the process at exit for ever."""
    script = tmp_path / "abandon.py"
    script.write_text(_ABANDON)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the program did not exit: a stuck worker of its pipeline held it") from None
    assert b"leaving" in out, err.decode()
