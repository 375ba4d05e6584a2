"""The page at / driven by a real headless Chromium (Debian's `chromium`), through the DevTools protocol.

Chromium runs with ``--remote-debugging-pipe``: protocol messages are JSON
terminated by a NUL byte, written to its fd 3 and read from its fd 4, so no
WebSocket client is needed. Skips when no Chromium is installed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import draw_shapes  # noqa: E402
from test_serve_process import Server  # noqa: E402

from neuralhash.hashing import NeuralHash  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


class Browser:
    """Headless Chromium with one page, spoken to over the DevTools pipe."""

    def __init__(self, exe: str, profile: str) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds() -> None:  # the child's fd 3 reads commands, fd 4 writes answers
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        args = [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--window-size=1000,900", f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=fds, pass_fds=(3, 4), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next = 0
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def send(self, method: str, session: str | None = None, **params):
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            while b"\0" not in self._buf:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise AssertionError("chromium closed the DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})
        raise AssertionError(f"{method}: no answer")

    def page(self, method: str, **params):
        return self.send(method, self.session, **params)

    def js(self, expression: str):
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:60]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)  # the browser's own process group only
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


RESULT = """JSON.stringify({
  state: document.body.dataset.state,
  error: document.getElementById('error').textContent,
  hash: document.getElementById('out-hash').textContent,
  unstable: document.getElementById('out-unstable-line').hidden ? null
            : document.getElementById('out-unstable').textContent,
  marked: document.querySelectorAll('#out-bits .u').length,
  rows: [...document.querySelectorAll('#matches tbody tr')].map(r => [...r.cells].map(c => c.textContent)),
})"""


def flip(hex_text: str, bits: list[int]) -> str:
    arr = np.unpackbits(np.frombuffer(bytes.fromhex(hex_text), np.uint8)).copy()
    arr[bits] ^= 1
    return np.packbits(arr).tobytes().hex()


@pytest.fixture(scope="module")
def exe():
    found = find_browser()
    if found is None:
        pytest.skip("no headless Chromium installed (Debian: apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def nh(module_env):
    return NeuralHash.demo()


def test_the_page_hashes_a_dropped_image_and_finds_matches(tmp_path, exe, nh):
    image = tmp_path / "holiday.png"
    draw_shapes(320, 240, seed=42).save(image)
    h = nh.hash(image)
    stored = [("same.jpg", h.hex), ("close.jpg", flip(h.hex, [3, 4])), ("far.jpg", flip(h.hex, list(range(20))))]
    server = Server(tmp_path / "h.db")
    browser = None
    try:
        status, _ = server.request("POST", "/lists/known/hashes",
                                   {"hashes": [{"hash": x, "path": p} for p, x in stored]})
        assert status == 200
        browser = Browser(exe, str(tmp_path / "profile"))
        browser.page("Page.enable")
        browser.page("Page.navigate", url=server.url + "/")
        browser.wait_for("document.readyState === 'complete' && !!document.getElementById('file')")

        # 1. Choose the file in the page's file input, as a person would.
        doc = browser.page("DOM.getDocument")["root"]["nodeId"]
        node = browser.page("DOM.querySelector", nodeId=doc, selector="#file")["nodeId"]
        browser.page("DOM.setFileInputFiles", nodeId=node, files=[str(image)])
        browser.wait_for("['done', 'error'].includes(document.body.dataset.state)")
        shot = browser.page("Page.captureScreenshot", format="png")["data"]
        (tmp_path / "page.png").write_bytes(base64.b64decode(shot))
        got = json.loads(browser.js(RESULT))
        assert got["state"] == "done", got
        assert got["hash"] == h.hex
        assert got["unstable"] == str(h.unstable_bits()) and got["marked"] == h.unstable_bits()
        # Within the default 8 bits: the image itself, then the 2-bit neighbour; not the 20-bit one.
        assert [(r[0], r[1], r[2], r[3]) for r in got["rows"]] == [
            ("0", h.hex, "known", "same.jpg"), ("2", stored[1][1], "known", "close.jpg")]

        # 2. Drop the image on the drop zone (a DataTransfer holding the file's bytes).
        browser.js("document.body.dataset.state = 'idle'; document.getElementById('out-hash').textContent = ''")
        b64 = base64.b64encode(image.read_bytes()).decode()
        browser.js(f"""(() => {{
            const bytes = Uint8Array.from(atob('{b64}'), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'dropped.png', {{ type: 'image/png' }}));
            document.getElementById('drop').dispatchEvent(new DragEvent('drop', {{ dataTransfer: dt, bubbles: true }}));
        }})()""")
        browser.wait_for("document.body.dataset.state === 'done'")
        assert json.loads(browser.js(RESULT))["hash"] == h.hex

        # 3. Paste a hash: only the lookup, at the distance typed.
        browser.js(f"""(() => {{
            document.getElementById('hex').value = '{stored[2][1]}';
            document.getElementById('distance').value = '20';
            document.body.dataset.state = 'idle';
            document.getElementById('query').requestSubmit();
        }})()""")
        browser.wait_for("document.body.dataset.state === 'done'")
        got = json.loads(browser.js(RESULT))
        assert got["unstable"] is None
        assert [r[3] for r in got["rows"]] == ["far.jpg", "close.jpg", "same.jpg"]
        assert [r[0] for r in got["rows"]] == ["0", "18", "20"]

        # 4. A malformed hash is shown as an error, with no request.
        browser.js("document.getElementById('hex').value = 'xyz'; document.getElementById('query').requestSubmit()")
        browser.wait_for("document.body.dataset.state === 'error'")
        assert "24 hex digits" in json.loads(browser.js(RESULT))["error"]
    finally:
        if browser is not None:
            browser.close()
        server.stop()
