"""report.html: one self-contained file (figures embedded, every table, no network), checked as
text and opened in a real headless Chromium that must render every figure and request nothing
beyond the file itself."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lora_profiler.report.html import write_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(doc: str) -> _Tags:
    p = _Tags()
    p.feed(doc)
    return p


@pytest.fixture
def html_run(report, tmp_path):
    """The inline report with its figures drawn, and its report.html written."""
    from lora_profiler.report.figures import draw_run_figures

    report["figures"] = draw_run_figures(report, tmp_path)
    report["attribution"]["reliability"] = [{"numbers": "overhead", "reason": "interval <wide> & noisy"}]
    report["notes"] = ["a note with <b>markup</b> stays text"]
    assert write_html(report, tmp_path) == "report.html"
    return report, tmp_path / "report.html"


def test_self_contained(html_run):
    report, path = html_run
    doc = path.read_text()
    tags = parse(doc)
    assert not [t for t, _ in tags.tags if t in ("script", "link", "iframe", "object", "embed")]
    for tag, attrs in tags.tags:
        for key in ("src", "href"):
            assert not attrs.get(key) or attrs[key].startswith(("data:", "#")), (tag, attrs)
    assert "@import" not in doc and "url(" not in doc and "http://" not in doc and "https://" not in doc
    images = [a["src"] for t, a in tags.tags if t == "img"]
    pngs = [f for f in report["figures"] if f.endswith(".png")]
    assert len(images) == len(pngs) >= 5
    for src, rel in zip(images, pngs):
        data = base64.b64decode(src.removeprefix("data:image/png;base64,"))
        assert data.startswith(PNG_MAGIC) and data == (path.parent / rel).read_bytes()


def test_every_table_and_the_notes(html_run):
    report, path = html_run
    doc = path.read_text()
    text = " ".join(parse(doc).text)
    att = report["attribution"]
    for caption in ("step time per mode", "speedups", "LoRA overhead over the frozen floor", "groups of causes"
                    if att.get("groups") else "speedups", "LoRA against full fine-tuning", "validation by ablation",
                    "unreliable numbers"):
        assert caption in text, caption
    for cause in att["causes"]:
        assert att["labels"][cause] in text
    assert "95% interval" in text and "(95% interval 6 ms – 8 ms)" in text  # the overhead with its interval
    assert "no-dropout" in text and "fold-scale" in text and "torchtune adapters multiply" in text
    assert "interval <wide> & noisy" in text and "&lt;wide&gt; &amp; noisy" in doc  # escaped, shown as text
    assert "a note with <b>markup</b> stays text" in text
    assert "What it means" in text  # the advice, computed from the numbers


def test_build_report_writes_it(tiny_run):
    doc = (tiny_run / "report.html").read_text()
    tags = parse(doc)
    assert not [t for t, _ in tags.tags if t in ("script", "link")]
    assert "no figures in this run" in doc  # the tiny run was made with --no-figures
    report = json.loads((tiny_run / "report.json").read_text())
    assert f"{report['modes']['lora']['trainable_params']:,}" in doc


# --- a real browser ---------------------------------------------------------------------------------

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _above_10(fd: int) -> int:
    """``fd`` moved to a number above 10, so putting two such on fds 3 and 4 cannot clobber either."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    commands on its fd 3, replies on fd 4, each a JSON message ending in NUL). No dependency."""

    def __init__(self, exe: str, profile: Path):
        to_browser, self._cmd = os.pipe()
        self._out, from_browser = os.pipe()
        to_browser, from_browser = _above_10(to_browser), _above_10(from_browser)
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
                f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]

        def on_fds_3_and_4():  # in the child, before exec: the pipe ends the protocol expects
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.proc = subprocess.Popen(args, preexec_fn=on_fds_3_and_4, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._next(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            e = self._next(max(deadline - time.monotonic(), 0.01))
            if e.get("method") == method:
                return e
            self.events.append(e)

    def _next(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                raise TimeoutError("no reply from the browser")
            chunk = os.read(self._out, 1 << 16)
            if not chunk:
                raise RuntimeError("the browser closed its pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd, self._out):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.mark.slow
def test_renders_offline_in_headless_chromium(html_run, tmp_path):
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe is None:
        pytest.skip("no Chromium here (apt-get install chromium; .ci/run installs it when it can)")
    report, path = html_run
    browser = Chromium(exe, tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Network.enable", session=session)
        browser.send("Page.enable", session=session)
        browser.send("Page.navigate", {"url": path.as_uri()}, session=session)
        browser.wait_event("Page.loadEventFired", timeout=60)
        result = browser.send("Runtime.evaluate", {"expression": """JSON.stringify({
            images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
            tables: document.querySelectorAll('table').length,
            title: document.title, width: document.body.scrollWidth})""", "returnByValue": True},
            session=session)
        page = json.loads(result["result"]["value"])
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
        (tmp_path / "report.png").write_bytes(base64.b64decode(shot["data"]))
        requests = [e["params"]["request"]["url"] for e in browser.events
                    if e.get("method") == "Network.requestWillBeSent"]
    finally:
        browser.close()
    pngs = [f for f in report["figures"] if f.endswith(".png")]
    assert len(page["images"]) == len(pngs) >= 5
    assert all(complete and w > 100 and h > 50 for complete, w, h in page["images"]), page["images"]
    assert page["tables"] >= 6 and page["title"] == "lora_profiler report: inline"
    assert (tmp_path / "report.png").read_bytes().startswith(PNG_MAGIC)
    assert requests and all(re.match(r"(file|data):", u) for u in requests), requests  # nothing left the machine
