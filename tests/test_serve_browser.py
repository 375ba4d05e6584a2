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
  shown: !document.getElementById('result').hidden,
  hash: document.getElementById('out-hash').textContent,
  unstable: document.getElementById('out-unstable-line').hidden ? null
            : document.getElementById('out-unstable').textContent,
  marked: document.querySelectorAll('#out-bits .u').length,
  scope: document.getElementById('out-scope').textContent,
  count: document.getElementById('out-count').textContent,
  rows: [...document.querySelectorAll('#matches tbody tr')].map(r => [r.dataset.kind, ...[...r.cells].map(c => c.textContent)]),
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


def submit(browser, **fields) -> dict:
    """Set the form's fields (element id -> value), submit it, and wait for the answer."""
    sets = "".join(f"document.getElementById({k!r}).value = {v!r};" for k, v in fields.items())
    browser.js(f"(() => {{ {sets} document.body.dataset.state = 'idle'; "
               "document.getElementById('query').requestSubmit(); })()")
    browser.wait_for("['done', 'error'].includes(document.body.dataset.state)")
    return json.loads(browser.js(RESULT))


def choose_files(browser, paths) -> dict:
    browser.js("document.body.dataset.state = 'idle'")
    doc = browser.page("DOM.getDocument")["root"]["nodeId"]
    node = browser.page("DOM.querySelector", nodeId=doc, selector="#file")["nodeId"]
    browser.page("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])
    browser.wait_for("['done', 'error'].includes(document.body.dataset.state)")
    return json.loads(browser.js(RESULT))


def test_the_page_for_analysts(tmp_path, exe, nh):
    image = tmp_path / "holiday.png"
    draw_shapes(320, 240, seed=42).save(image)
    h = nh.hash(image)
    others = []
    for k in range(3):
        p = tmp_path / f"other{k}.png"
        draw_shapes(200, 150, seed=100 + k).save(p)
        others.append((p, nh.hash(p).hex))
    stored = [("same.jpg", h.hex), ("close.jpg", flip(h.hex, [3, 4])), ("far.jpg", flip(h.hex, list(range(20)))),
              ('=HYPERLINK("http://x.example","y")', flip(h.hex, [1]))]
    server = Server(tmp_path / "h.db")
    browser = None
    try:
        def post(path, body):
            status, answer = server.request("POST", path, body)
            assert status == 200, answer

        # Only another model's list, holding the image's very hash: the page must not show it as a match (item 5).
        post("/lists/theirs/hashes", {"model_id": "f" * 64, "hashes": [{"hash": h.hex, "path": "other-model.jpg"}]})
        browser = Browser(exe, str(tmp_path / "profile"))
        browser.page("Page.enable")

        def load() -> None:
            browser.page("Page.navigate", url=server.url + "/")
            browser.wait_for("document.readyState === 'complete' && document.body.dataset.lists === 'loaded'")

        load()
        got = choose_files(browser, [image])
        assert [r[0] for r in got["rows"]] == ["none"], got
        assert "searched no list" in got["scope"] and "theirs" in got["scope"]

        post("/lists/known/hashes", {"hashes": [{"hash": x, "path": p} for p, x in stored]})
        post("/lists/second/hashes", {"hashes": [{"hash": others[0][1], "path": "second.jpg"}]})
        load()
        page_text = browser.js("document.body.innerText")
        assert "distance" in page_text and "threshold" in page_text and nh.model_id in page_text
        assert "/" not in browser.js("document.querySelector('p.muted').textContent.split('API')[0]")  # no paths (item 12)
        assert browser.js("[...document.querySelectorAll('#lists input')].map(b => b.value + ':' + b.disabled).join()") \
            == "known:false,second:false,theirs:true"

        # 1. One image chosen in the file input: its hash, unstable bits, matches of the server's model only.
        got = choose_files(browser, [image])
        assert got["state"] == "done", got
        assert got["hash"] == h.hex
        assert got["unstable"] == str(h.unstable_bits()) and got["marked"] == h.unstable_bits()
        assert [(r[0], r[3], r[5], r[7]) for r in got["rows"]] == [
            ("match", "0", h.hex, "same.jpg"), ("match", "1", stored[3][1], stored[3][0]),
            ("match", "2", stored[1][1], "close.jpg")]
        assert "other-model.jpg" not in json.dumps(got["rows"])
        assert "theirs" in got["scope"] and "Left out" in got["scope"] and "known" in got["scope"]

        # 2. Near misses beyond the threshold are marked as such; a cut answer says so (item 6).
        got = submit(browser, hex=stored[2][1], threshold="4", distance="20", limit="3")
        assert [(r[0], r[3], r[7]) for r in got["rows"]] == [
            ("match", "0", "far.jpg"), ("near", "18", "close.jpg"), ("near", "19", stored[3][0]),
            ("cut", "", "")]
        assert "near miss" in got["rows"][1][4] and "cut off" in got["rows"][3][4]
        assert "1 match(es) within 4 bits, 2 near miss(es)" in got["count"] and "1 cut off" in got["count"]

        # 3. A distance the server refuses is refused before sending, and the old result goes (item 6).
        got = submit(browser, distance="40")
        assert got["state"] == "error" and "0 to 32" in got["error"] and not got["shown"] and got["rows"] == []
        got = submit(browser, hex="xyz", distance="8")
        assert got["state"] == "error" and "24 hex digits" in got["error"] and not got["shown"]

        # 4. Pick the lists: only the one ticked is searched, and the page says so.
        browser.js("document.querySelector('#lists input[value=second]').checked = true")
        got = submit(browser, hex=others[0][1], threshold="8", distance="8", limit="100")
        assert [(r[0], r[7]) for r in got["rows"]] == [("match", "second.jpg")]
        assert "searched second (1)" in got["scope"]
        browser.js("document.querySelector('#lists input[value=second]').checked = false")

        # 5. Many images at once: one table, one row per match or per image without one; a CSV to download.
        got = choose_files(browser, [image] + [p for p, _ in others])
        assert got["state"] == "done", got
        by_query = {}
        for r in got["rows"]:
            by_query.setdefault(r[1], []).append((r[0], r[7]))
        assert by_query["holiday.png"] == [("match", "same.jpg"), ("match", stored[3][0]), ("match", "close.jpg")]
        assert by_query["other0.png"] == [("match", "second.jpg")]
        assert by_query["other1.png"] == [("none", "")] and by_query["other2.png"] == [("none", "")]
        csv_text = browser.js("fetch(document.getElementById('csv').href).then(r => r.text())")
        lines = csv_text.splitlines()
        assert lines[0] == "query,query_hash,distance,verdict,hash,list,label"
        assert f'holiday.png,{h.hex},1,match,{stored[3][1]},known,"\'=HYPERLINK(""http://x.example"",""y"")"' in lines
        assert len(lines) == 1 + len(got["rows"])

        # 6. Drop an image on the drop zone (a DataTransfer holding the file's bytes).
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
        shot = browser.page("Page.captureScreenshot", format="png")["data"]
        (tmp_path / "page.png").write_bytes(base64.b64decode(shot))
    finally:
        if browser is not None:
            browser.close()
        server.stop()
