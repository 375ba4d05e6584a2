"""`neuralhash serve` as a real process on loopback: signals, restarts, streaming limits, a writer beside it."""

from __future__ import annotations

import io
import json
import os
import queue
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import neuralhash  # noqa: E402
from conftest import draw_shapes  # noqa: E402
from neuralhash.hashing import NeuralHash  # noqa: E402


@pytest.fixture(scope="module")
def nh(module_env):
    return NeuralHash.demo()  # also writes the demo model into this module's cache for the servers


def env() -> dict:
    """This environment, with the neuralhash these tests import first on the children's path."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(Path(neuralhash.__file__).parents[1]), e.get("PYTHONPATH", "")])
    return e


class Server:
    """A `neuralhash serve` process; its URL is read from the line it prints when it listens."""

    def __init__(self, db: Path, *args: str, token: str | None = None) -> None:
        cmd = [sys.executable, "-m", "neuralhash.cli", "serve", str(db), "--port", "0", "--model", "demo",
               "--workers", "1", *args]
        self.token = token
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env(),
                                     start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.stderr: list[str] = []
        deadline = time.monotonic() + 120
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"server exited: {''.join(self.stderr)}")
            self.stderr.append(line)
            if " on http://" in line:
                self.url = line.split(" on ", 1)[1].split(" ", 1)[0]
                self.port = int(self.url.rsplit(":", 1)[1])
                return

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def request(self, method: str, path: str, body=None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # this test's own process group only
            raise
        while True:
            line = self.lines.get(timeout=10)
            if line is None:
                break
            self.stderr.append(line)
        return rc


@pytest.fixture()
def servers():
    started: list[Server] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            os.killpg(s.proc.pid, signal.SIGKILL)


def png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    draw_shapes(160, 120, seed=seed).save(buf, format="PNG")
    return buf.getvalue()


def raw_request(port: int, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(head.encode())
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one response (by its Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length")
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return int(lines[0].split()[1]), body[:length]


def test_sigterm_finishes_the_request_in_flight_and_a_restart_serves_the_same(tmp_path, nh, servers):
    db = tmp_path / "h.db"
    s = Server(db)
    servers.append(s)
    digests = [bytes(r) for r in np.random.default_rng(0).integers(0, 256, (50, 12), dtype=np.uint8)]
    status, _ = s.request("POST", "/lists/l/hashes",
                          {"hashes": [{"hash": d.hex(), "path": f"p{i}"} for i, d in enumerate(digests)]})
    assert status == 200
    query = {"hashes": [d.hex() for d in digests[:5]], "max_distance": 30}
    before = s.request("POST", "/lookup", query)

    image = png_bytes(1)
    sock = raw_request(s.port, f"POST /hash HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                               f"Content-Length: {len(image)}\r\n\r\n")
    sock.sendall(image[:100])  # the request is in flight...
    time.sleep(0.5)
    s.proc.send_signal(signal.SIGTERM)  # ...when the signal comes
    time.sleep(1.0)
    assert s.proc.poll() is None  # still finishing it
    sock.sendall(image[100:])
    status, body = read_response(sock)
    assert status == 200 and json.loads(body)["hash"] == nh.hash(image).hex
    assert s.stop() == 0
    assert not any("Traceback" in line for line in s.stderr), s.stderr

    again = Server(db)
    servers.append(again)
    assert again.request("POST", "/lookup", query) == before
    assert again.stop() == 0


def test_the_upload_limit_stops_a_chunked_body_while_it_streams(tmp_path, nh, servers):
    s = Server(tmp_path / "h.db", "--max-upload", "1M")
    servers.append(s)
    sock = raw_request(s.port, "POST /hash HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = os.urandom(64 * 1024)
    sent = 0
    try:
        while sent < 200 * 1024 * 1024:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break  # the answer came before the body ended
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, body = read_response(sock)
    assert status == 413 and "limit" in json.loads(body)["error"]
    assert sent < 16 * 1024 * 1024  # refused while streaming, not after reading 200 MB
    assert s.request("GET", "/health", None)[0] == 200
    assert s.stop() == 0


def test_index_add_beside_the_server_loses_nothing(tmp_path, nh, servers):
    db = tmp_path / "h.db"
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(12):
        draw_shapes(120, 90, seed=100 + i).save(imgs / f"i{i:02d}.png")
    s = Server(db)
    servers.append(s)
    writer = subprocess.Popen([sys.executable, "-m", "neuralhash.cli", "index", "add", str(db), str(imgs),
                               "--model", "demo", "--workers", "0", "--batch-size", "1"],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env())
    digests = [bytes(r) for r in np.random.default_rng(1).integers(0, 256, (150, 12), dtype=np.uint8)]
    for i, d in enumerate(digests):  # one request each, while the other process writes
        assert s.request("POST", "/lists/http/hashes", {"hashes": [{"hash": d.hex(), "path": f"h{i}"}]})[0] == 200
    _, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    # The server sees the other process's rows without a restart.
    expected = {nh.hash(p).hex for p in sorted(imgs.iterdir())}
    status, found = s.request("POST", "/lookup", {"hashes": sorted(expected), "max_distance": 0})
    assert status == 200 and all(r["matches"] for r in found["results"])
    assert s.stop() == 0
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    out = subprocess.run([sys.executable, "-m", "neuralhash.cli", "index", "export", str(db), "--jsonl"],
                         capture_output=True, text=True, env=env(), check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["hash"] for r in rows if r["path"].startswith("h")) == sorted(d.hex() for d in digests)
    assert {r["hash"] for r in rows if r["path"].endswith(".png")} == expected


@pytest.mark.parametrize("args, words", [
    (["--host", "0.0.0.0"], "token"),
    (["--token-file", "/nonexistent/token"], "token file"),
])
def test_refusals_are_one_line(tmp_path, args, words, module_env):
    r = subprocess.run([sys.executable, "-m", "neuralhash.cli", "serve", str(tmp_path / "h.db"), *args],
                       capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.startswith("neuralhash: error:")]
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path, module_env):
    other = tmp_path / "notes.db"
    other.write_bytes(b"not sqlite at all\n" * 10)
    before = other.read_bytes()
    r = subprocess.run([sys.executable, "-m", "neuralhash.cli", "serve", str(other), "--port", "0"],
                       capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert str(other) in r.stderr.strip().splitlines()[-1]
    assert other.read_bytes() == before


def test_a_token_guards_a_real_server(tmp_path, nh, servers):
    token = "a-long-enough-token-0123456789"
    (tmp_path / "tok").write_text(token + "\n")
    s = Server(tmp_path / "h.db", "--token-file", str(tmp_path / "tok"), token=token)
    servers.append(s)
    assert s.request("GET", "/info")[0] == 200
    s.token = None
    status, body = s.request("GET", "/info")
    assert status == 401 and "token" in body["error"]
    assert s.stop() == 0


def test_a_port_in_use_is_one_line(tmp_path, module_env):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "neuralhash.cli", "serve", str(tmp_path / "h.db"),
                            "--port", str(port)], capture_output=True, text=True, env=env(), timeout=120)
    finally:
        taken.close()
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"neuralhash: error: cannot serve on 127.0.0.1:{port}: Address already in use"


def test_aborted_exports_release_everything_and_sigterm_still_stops_the_server(tmp_path, nh, servers):
    s = Server(tmp_path / "h.db")
    servers.append(s)
    rng = np.random.default_rng(7)
    digests = rng.integers(0, 256, (200_000, 12), dtype=np.uint8)
    body = "".join(f"{bytes(d).hex()}  entry-{i}\n" for i, d in enumerate(digests)).encode()  # ~7 MB of export
    req = urllib.request.Request(s.url + "/lists/big/import", data=body, method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=300) as r:
        assert json.loads(r.read())["imported"] == len(digests)
    for _ in range(200):  # read a little of an export, then reset the connection
        sock = raw_request(s.port, "GET /lists/big/export?format=csv HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    query = {"hashes": [bytes(digests[5]).hex()], "max_distance": 0}
    status, found = s.request("POST", "/lookup", query)
    assert status == 200 and found["results"][0]["matches"][0]["path"] == "entry-5"
    assert s.request("GET", "/health")[0] == 200
    full = urllib.request.urlopen(s.url + "/lists/big/export", timeout=120).read()  # exports still run
    assert full == body
    started = time.monotonic()
    assert s.stop(timeout=45) == 0  # the grace period is 30 s
    assert time.monotonic() - started < 40


def test_an_import_cut_off_by_shutdown_answers_json_and_is_rolled_back(tmp_path, nh, servers):
    db = tmp_path / "h.db"
    s = Server(db, "--grace-period", "1")
    servers.append(s)
    assert s.request("POST", "/lists/kept/hashes", {"hashes": [{"hash": "00" * 12, "path": "z"}]})[0] == 200
    rng = np.random.default_rng(9)
    body = "".join(f"{bytes(d).hex()}  n{i}\n" for i, d in
                   enumerate(rng.integers(0, 256, (2_000_000, 12), dtype=np.uint8))).encode()
    sock = raw_request(s.port, f"POST /lists/big/import HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                               f"Content-Length: {len(body)}\r\n\r\n")
    sock.sendall(body)
    time.sleep(1.0)  # the import is running (2 million lines take several seconds)...
    s.proc.send_signal(signal.SIGTERM)  # ...when the signal comes; the grace period is 1 s
    status, answer = read_response(sock)
    assert status == 503, answer
    error = json.loads(answer)["error"]
    assert "rolled back" in error and "\n" not in error
    assert s.stop(timeout=30) == 0
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT name, count FROM lists").fetchall() == [("kept", 1)]
        assert con.execute("SELECT count(*) FROM images").fetchone() == (1,)
    finally:
        con.close()
    assert not any("Traceback" in line for line in s.stderr), s.stderr
